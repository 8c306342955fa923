"""Where independent work units run: in this process, a local process pool, or a Ray cluster.

A unit is a picklable function applied to a picklable argument. ``Executor.imap`` yields (key, result) as units
finish, in any order, with at most ``2 * workers`` units in flight so that their inputs need not all exist at once.
The caller saves each result as it arrives: a failed or killed unit loses only itself, and a rerun skips what
was saved. Units pin their torch thread count, so a result does not depend on where it was computed.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import platform
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch

from repcam.errors import ExecutorError  # noqa: F401 - defined in repcam.errors, importable from here

KINDS = ("inprocess", "process", "ray")


@dataclass(frozen=True)
class Unit:
    """``fn(arg)`` run with ``threads`` torch threads; ``key`` identifies the result."""

    key: Any
    fn: Callable[[Any], Any]
    arg: Any
    threads: int = 1


@contextmanager
def pinned_threads(threads: int) -> Iterator[None]:
    """Torch runs on ``threads`` threads inside the block, the caller's count after: float sums (and so trained
    weights) depend on the thread count, so every step of a run uses the one it records, whatever OMP_NUM_THREADS
    or an earlier ``torch.set_num_threads`` left in the process."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_unit(unit: Unit) -> tuple[Any, Any]:
    """Run one unit (in whatever process it landed) with a fixed thread count, restoring the caller's."""
    with pinned_threads(unit.threads):
        return unit.key, unit.fn(unit.arg)


def usable_cores() -> int:
    """The CPUs this process may run on: its affinity mask where the OS has one (taskset, a container's cpuset, a
    test worker pinned to its share), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # macOS and Windows have no affinity mask
        return os.cpu_count() or 1


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's name as the OS gives it: on Linux /proc/cpuinfo's (or ``cpuinfo``'s) model name with its family and
    model numbers, which tell apart two hosts whose name is the same ("AMD EPYC"); elsewhere platform.processor()."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip() and fields:
            break  # the first processor's block is enough
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine() or "unknown"
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def default_threads(workers: int) -> int:
    """Torch threads per unit: the usable cores shared among the workers (oversubscribing 2 cores made runs up to 25x
    slower)."""
    return max(1, usable_cores() // max(1, workers))


class Executor:
    """Runs work units (:class:`Unit`) in this process (``inprocess``), a spawned local process pool (``process``) or
    on Ray (``ray``: a local cluster of ``workers`` CPUs, or the one at ``address``); as a context manager it closes
    on exit."""

    def __init__(self, kind: str = "inprocess", workers: int = 1, address: str | None = None) -> None:
        if kind not in KINDS:
            raise ExecutorError(f"unknown executor {kind!r}; choose one of {', '.join(KINDS)}")
        if workers < 1:
            raise ExecutorError(f"workers must be >= 1, got {workers}")
        self.kind, self.workers, self.address = kind, workers, address
        self._pool: cf.ProcessPoolExecutor | None = None
        self._ray = None
        self._started_ray = False

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Shut down the process pool (waiting for it, pending units cancelled), and Ray if this executor started it."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._ray is not None and self._started_ray:
            self._ray[0].shutdown()
        self._ray = None

    # ---- backends ------------------------------------------------------------------------------
    def _process_pool(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            # spawn: a forked child of a process that already ran torch threads can deadlock.
            self._pool = cf.ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"))
        return self._pool

    def _ray_remote(self):
        if self._ray is None:
            try:
                import ray
            except ImportError as e:
                raise ExecutorError("executor 'ray' needs the ray package: pip install 'repcam[ray]'") from e
            if not ray.is_initialized():
                self._started_ray = True
                try:
                    if self.address:
                        ray.init(address=self.address, log_to_driver=False)
                    else:
                        ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False)
                except Exception as e:  # noqa: BLE001 - Ray raises many types; the message is what matters
                    raise ExecutorError(f"could not start or reach a Ray cluster (address={self.address!r}): {e}") from e
            self._ray = (ray, ray.remote(num_cpus=1)(run_unit))
        return self._ray

    # ---- running -------------------------------------------------------------------------------
    def imap(self, units: Iterable[Unit]) -> Iterator[tuple[Any, Any]]:
        """(key, result) for every unit, as they complete.

        A unit that raises does not stop the others: once every other unit is done, :class:`ExecutorError` names
        the failed units and the first error. Only KeyboardInterrupt and SystemExit stop at once.
        """
        failed: list[tuple[Any, BaseException]] = []
        if self.kind == "inprocess":
            for u in units:
                try:
                    yield run_unit(u)
                except Exception as e:  # noqa: BLE001 - reported below with the unit's key
                    failed.append((u.key, e))
        elif self.kind == "process":
            yield from self._imap_pool(units, failed)
        else:
            yield from self._imap_ray(units, failed)
        if failed:
            key, err = failed[0]
            raise ExecutorError(f"{len(failed)} work unit(s) failed, the others were saved; first failure ({key!r}): "
                                f"{type(err).__name__}: {err}. Fix the cause and rerun to finish them.") from err

    def _imap_pool(self, units: Iterable[Unit], failed: list) -> Iterator[tuple[Any, Any]]:
        pending: dict[cf.Future, Any] = {}

        def drain(done: Iterable[cf.Future]) -> Iterator[tuple[Any, Any]]:
            for f in done:
                key = pending.pop(f)
                try:
                    yield f.result()
                except cf.process.BrokenProcessPool as e:
                    self._pool = None  # a worker died (killed, out of memory): the pool is unusable
                    raise ExecutorError(f"a worker process died while running {key!r} ({e}); finished units are saved, rerun to finish") from e
                except Exception as e:  # noqa: BLE001
                    failed.append((key, e))

        for u in units:
            pending[self._process_pool().submit(run_unit, u)] = u.key
            if len(pending) >= 2 * self.workers:
                done, _ = cf.wait(list(pending), return_when=cf.FIRST_COMPLETED)
                yield from drain(done)
        while pending:
            done, _ = cf.wait(list(pending), return_when=cf.FIRST_COMPLETED)
            yield from drain(done)

    def _imap_ray(self, units: Iterable[Unit], failed: list) -> Iterator[tuple[Any, Any]]:
        ray, remote = self._ray_remote()
        pending: dict[Any, Any] = {}

        def drain_one() -> Iterator[tuple[Any, Any]]:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            key = pending.pop(ref)
            try:
                yield ray.get(ref)
            except Exception as e:  # noqa: BLE001 - RayTaskError wraps the unit's exception; a dead worker is retried by Ray
                failed.append((key, e))

        for u in units:
            pending[remote.remote(u)] = u.key
            if len(pending) >= 2 * self.workers:
                yield from drain_one()
        while pending:
            yield from drain_one()
