import os
from pathlib import Path

import pytest


def _pin_worker() -> int:
    """Torch threads for this test process. Alone: min(2, cores), as always. As one of N pytest-xdist workers
    (``make test`` runs ``-n auto --dist loadscope``: a module's tests, or a class's, share one worker): this
    worker's share of the usable CPUs, pinned with the affinity mask, so that N workers never oversubscribe
    the machine (two 2-thread torch processes on 2 cores run several times slower than one after the other); runs in
    the tests follow the mask (repcam's default threads), and so do subprocesses, which also inherit OMP_NUM_THREADS."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if worker is None or count <= 1:
        return min(2, len(cpus))
    mine = cpus[int(worker.removeprefix("gw")) % count :: count] or cpus
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, mine)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(len(mine))
    return len(mine)


THREADS = _pin_worker()  # before torch starts its thread pool

import torch  # noqa: E402

torch.set_num_threads(THREADS)


@pytest.fixture
def one_thread():
    """One torch thread for the test (modules of tiny models use it for every test: a second thread gains nothing
    and stalls on a loaded machine); the count comes back afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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

