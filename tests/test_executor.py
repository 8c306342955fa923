"""Executors: same results in-process, in a process pool and on Ray; failures lose only their own unit."""

import os
from pathlib import Path

import pytest
import torch

import repcam.pipeline.units as units_module
from repcam.pipeline.executor import Executor, ExecutorError, Unit, cpu_model
from repcam.pipeline.run import Run, RunError
from repcam.store.storage import read_json
from tiny_run import small_tiny_config, tiny_config


def square(x: int) -> int:
    return x * x


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three is bad")
    return x


@pytest.mark.parametrize("kind", ["inprocess", "process"])
def test_every_unit_runs_once_and_failures_lose_only_themselves(kind):
    with Executor(kind, workers=2) as ex:
        assert dict(ex.imap(Unit(i, square, i) for i in range(7))) == {i: i * i for i in range(7)}
        got = {}
        with pytest.raises(ExecutorError, match=r"1 work unit\(s\) failed.*\(3\): ValueError: three is bad"):
            for k, v in ex.imap(Unit(i, fail_on_three, i) for i in range(6)):
                got[k] = v
        assert got == {i: i for i in range(6) if i != 3}


@pytest.mark.parametrize("kind", ["inprocess", "process"])
def test_units_are_drawn_lazily(kind):
    drawn = []

    def units():
        for i in range(20):
            drawn.append(i)
            yield Unit(i, square, i)

    with Executor(kind, workers=1) as ex:
        next(ex.imap(units()))
        assert len(drawn) <= 2  # at most 2 * workers units (and their inputs) exist at once


def test_unit_pins_threads_and_restores_them():
    before = torch.get_num_threads()
    key, n = Executor().imap([Unit("k", lambda _: torch.get_num_threads(), None, threads=1)]).__next__()
    assert (key, n) == ("k", 1) and torch.get_num_threads() == before


def test_bad_executor_settings():
    with pytest.raises(ExecutorError, match="unknown executor 'dask'"):
        Executor("dask")
    with pytest.raises(ExecutorError, match="workers must be >= 1"):
        Executor("process", workers=0)


def _small(**over):
    """12 pair models (tiny_run.small_tiny_config): enough to spread over two workers and to fail one."""
    return small_tiny_config(evaluation__variants=["contrast"], execution__threads=1, **over)


def _fingerprint(run_dir: Path) -> tuple[dict, dict]:
    """The table, and every pair model's weights (file bytes differ: torch.save names its archive after the file)."""
    rows = {r["method"]: r["miou"] for r in read_json(run_dir / "results" / "val" / "ablation.json")["rows"]}
    models = {}
    for p in sorted((run_dir / "pairs").glob("*.pt")):
        state = torch.load(p, map_location="cpu", weights_only=True)
        models[p.name] = torch.cat([v.flatten().double() for v in state.values()]).numpy().tobytes()
    return rows, models


@pytest.fixture(scope="module")
def inprocess_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("inprocess")
    Run(_small(), run_dir, show_progress=False).run()
    return run_dir


def test_process_pool_gives_identical_models_and_table(inprocess_run, tmp_path):
    Run(_small(execution__kind="process", execution__workers=2), tmp_path, show_progress=False).run()
    assert _fingerprint(tmp_path) == _fingerprint(inprocess_run)


def test_ray_local_cluster_gives_identical_models_and_table(inprocess_run, tmp_path):
    pytest.importorskip("ray", reason="ray is an optional extra: pip install 'repcam[ray]'")
    Run(_small(execution__kind="ray", execution__workers=2), tmp_path, show_progress=False).run()
    assert _fingerprint(tmp_path) == _fingerprint(inprocess_run)


def test_failed_pair_unit_loses_only_itself_and_rerun_finishes(inprocess_run, tmp_path, monkeypatch):
    n_pairs = len(list((inprocess_run / "pairs").glob("*.pt")))
    real, calls = units_module.fit, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated out-of-memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(units_module, "fit", flaky)
    with pytest.raises(RunError, match=r"1 work unit\(s\) failed, the others were saved.*simulated out-of-memory"):
        Run(_small(), tmp_path, show_progress=False).run()
    assert len(list((tmp_path / "pairs").glob("*.pt.meta.json"))) == n_pairs - 1
    calls.clear()
    monkeypatch.setattr(units_module, "fit", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    Run(_small(), tmp_path, show_progress=False).run()
    assert len(calls) == 1
    assert _fingerprint(tmp_path) == _fingerprint(inprocess_run)


def test_steps_outside_work_units_train_on_the_configured_threads(tmp_path, monkeypatch):
    """The multi-class model trains in this process, not in a unit: it too runs on execution.threads (an
    OMP_NUM_THREADS=1 shell used to train it on 1 thread and the pair models on 2), and the caller's count returns."""
    import repcam.pipeline.stages.multiclass as multiclass_stage

    caller = torch.get_num_threads()
    seen = []

    def first_fit(*args, **kwargs):
        seen.append(torch.get_num_threads())
        raise KeyboardInterrupt("stop after the first training starts")

    monkeypatch.setattr(multiclass_stage, "fit", first_fit)
    with pytest.raises(KeyboardInterrupt):
        Run(tiny_config(execution__threads=caller + 1), tmp_path, show_progress=False).run()
    assert seen == [caller + 1] and torch.get_num_threads() == caller


def test_environment_records_the_runs_thread_count(inprocess_run):
    env = read_json(inprocess_run / "environment.json")
    assert env["threads"] == 1 and env["interop_threads"] >= 1 and isinstance(env["thread_env"], dict)
    # The host and the kernels' instruction set: the same code and threads gave another table on another host.
    assert env["cpu"] == cpu_model() and env["cpu"] != "unknown"
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_cpu_model_tells_apart_hosts_with_the_same_name():
    block = "processor\t: {p}\nvendor_id\t: AuthenticAMD\ncpu family\t: {f}\nmodel\t\t: {m}\nmodel name\t: AMD EPYC\n"
    two = block.format(p=0, f=25, m=17) + "\n" + block.format(p=1, f=25, m=17)
    assert cpu_model(two) == "AMD EPYC (family 25, model 17)"
    assert cpu_model(block.format(p=0, f=23, m=49)) == "AMD EPYC (family 23, model 49)"
    assert cpu_model("processor\t: 0\nmodel name\t: Apple M2\n") == "Apple M2"  # no family numbers: the name alone


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity mask on this OS")
def test_default_threads_follow_the_affinity_mask():
    """A process limited to some CPUs (taskset, a cpuset, a pinned test worker) gets that many default threads, not the
    machine's count: more would oversubscribe its CPUs."""
    from repcam.pipeline.executor import default_threads, usable_cores

    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})
        assert usable_cores() == 1 and default_threads(1) == 1 and default_threads(4) == 1
    finally:
        os.sched_setaffinity(0, before)
    assert usable_cores() == len(before)
