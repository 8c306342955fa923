"""Scoring on several threads, with every result applied in the order it was submitted: an evaluation's numbers
(and the order of its per-record counts) are the same whatever the number of workers.

The pixel work of a record (:meth:`repcam.evaluation.metrics.IoUAccumulator.counts`,
:meth:`repcam.evaluation.irn.IRNSweep.confusions`) is NumPy and torch code that releases the GIL, so threads
share it out over the cores without copying maps or masks into other processes. Applying a result (adding counts
to an accumulator) stays on the submitting thread, one result at a time, so accumulators need no lock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import torch

T = TypeVar("T")


class OrderedPool:
    """``submit(fn, *args, then=apply)`` runs ``fn(*args)`` on one of ``workers`` threads and later calls
    ``apply(result)`` on the submitting thread, in submission order; ``drain()`` applies everything submitted.

    At most ``window`` jobs are in flight (memory stays flat: a job holds its map). With ``workers <= 1`` a job
    runs and is applied at once, as a plain loop would. While the pool is open, torch runs one thread per job
    (``torch.set_num_threads(1)``, restored on close): the jobs, not torch's own threads, share the cores out.
    An error in a job is raised by the ``submit`` or ``drain`` that applies it; closing after an error drops the
    jobs not yet applied.
    """

    def __init__(self, workers: int = 1, window: int = 256) -> None:
        self.workers = max(1, int(workers))
        self.window = max(1, int(window))
        self._pending: deque[tuple[Future[Any], Callable[[Any], None]]] = deque()
        self._executor: ThreadPoolExecutor | None = None
        self._torch_threads: int | None = None
        if self.workers > 1:
            self._torch_threads = torch.get_num_threads()
            torch.set_num_threads(1)
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="repcam-score")

    def submit(self, fn: Callable[..., T], *args: Any, then: Callable[[T], None]) -> None:
        """Run ``fn(*args)`` (on a worker thread) and apply ``then`` to its result after every earlier job's."""
        if self._executor is None:
            then(fn(*args))
            return
        self._pending.append((self._executor.submit(fn, *args), then))
        while len(self._pending) > self.window:
            self._apply_first()

    def drain(self) -> None:
        """Apply every job submitted so far, in order."""
        while self._pending:
            self._apply_first()

    def _apply_first(self) -> None:
        future, then = self._pending.popleft()
        then(future.result())

    def close(self) -> None:
        """Drop the jobs not yet applied, stop the threads and give torch its thread count back."""
        for future, _ in self._pending:
            future.cancel()
        self._pending.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        if self._torch_threads is not None:
            torch.set_num_threads(self._torch_threads)
            self._torch_threads = None

    def __enter__(self) -> OrderedPool:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            if exc_type is None:
                self.drain()
        finally:
            self.close()
