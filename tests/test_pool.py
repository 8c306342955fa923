"""The scoring pool (repcam.evaluation.pool): results applied in submission order whatever order the jobs finish in,
a bounded number in flight, errors raised where the job is applied, torch's thread count restored."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from repcam.evaluation.metrics import ClassMask, IoUAccumulator
from repcam.evaluation.pool import OrderedPool


def test_results_are_applied_in_submission_order_when_later_jobs_finish_first() -> None:
    applied, finished = [], []
    lock = threading.Lock()

    def job(i: int) -> int:
        time.sleep(0.02 * (5 - i))  # job 0 is the slowest: the later ones finish first
        with lock:
            finished.append(i)
        return i * 10

    with OrderedPool(workers=3) as pool:
        for i in range(6):
            pool.submit(job, i, then=applied.append)
    assert applied == [0, 10, 20, 30, 40, 50]
    assert finished != sorted(finished)  # the order really was different on the workers


def test_one_worker_runs_each_job_at_once_on_the_calling_thread() -> None:
    seen = []
    with OrderedPool(workers=1) as pool:
        pool.submit(lambda: threading.current_thread().name, then=seen.append)
        assert seen == [threading.current_thread().name]  # applied before submit returned


def test_no_more_than_the_window_is_in_flight() -> None:
    applied = []
    with OrderedPool(workers=2, window=2) as pool:
        for i in range(5):
            pool.submit(lambda v: v, i, then=applied.append)
            assert i + 1 - len(applied) <= 2  # submitted but not yet applied
        assert len(pool._pending) <= 2
    assert applied == list(range(5))


def test_an_error_in_a_job_is_raised_where_it_is_applied_and_later_jobs_are_dropped() -> None:
    applied = []

    def job(i: int) -> int:
        if i == 1:
            raise ValueError("img7: cam and mask must be 2-D")
        return i

    with pytest.raises(ValueError, match="img7"):
        with OrderedPool(workers=2) as pool:
            for i in range(4):
                pool.submit(job, i, then=applied.append)
    assert applied == [0]  # the job before the error, nothing after it


def test_torch_runs_one_thread_per_job_while_the_pool_is_open_and_gets_its_count_back() -> None:
    before = torch.get_num_threads()
    with OrderedPool(workers=2):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with OrderedPool(workers=2):
            raise RuntimeError("stop")
    assert torch.get_num_threads() == before


def test_accumulator_counts_on_threads_equal_add_in_order() -> None:
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 4, (40, 30)).astype(np.uint8)
    mask[:3] = 255
    maps = [rng.random((9, 7)).astype(np.float32) for _ in range(12)]
    serial, threaded = IoUAccumulator(3), IoUAccumulator(3)
    for k, m in enumerate(maps):
        serial.add(f"img{k}", k % 3, m, mask)
    with OrderedPool(workers=2, window=3) as pool:
        for k, m in enumerate(maps):
            cm = threaded.check(f"img{k}", k % 3, m, mask)
            pool.submit(threaded.counts, m, cm, then=lambda c, k=k: threaded.add_counts(f"img{k}", k % 3, c))
    assert threaded.state_dict() == serial.state_dict()
