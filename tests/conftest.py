import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
VOC_MINI = SHARED_DATA / "VOCdevkit-mini"


@pytest.fixture
def voc_mini() -> Path:
    if not (VOC_MINI / "VOC2012").is_dir():
        pytest.skip(f"real VOC subset not present at {VOC_MINI} (only in the development workspace)")
    return VOC_MINI


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished tiny run (tests/tiny_run.py); tests may rerun it with the same config but must not alter it."""
    from repcam.pipeline.run import Run
    from tiny_run import tiny_config

    run_dir = tmp_path_factory.mktemp("tiny_run")
    Run(tiny_config(), run_dir, show_progress=False).run()
    return run_dir


# ---- speed (issue 28): one frozen-trunk tiny run per session, for the tests that read it or copy it and rerun -------
@pytest.fixture(scope="session")
def frozen_run(tmp_path_factory) -> Path:
    """A finished run of tiny_run.frozen_tiny_config(); tests that rerun it with other settings copy it first."""
    from repcam.pipeline.run import Run
    from tiny_run import frozen_tiny_config

    run_dir = tmp_path_factory.mktemp("frozen_run") / "run"
    Run(frozen_tiny_config(), run_dir, show_progress=False).run()
    return run_dir
