"""Run independent data-building tasks in parallel processes.

The training cache (:func:`utils.training.cache.build_cache`) decodes and
standardizes its cases with it. Processes are *spawned*, not forked (a
process that runs TensorFlow has threads, and forking it can deadlock), and
they import ``utils`` without Keras (``BRATS_COURSE_NO_KERAS=1``), which
saves seconds and memory in each.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

NO_KERAS_ENV = "BRATS_COURSE_NO_KERAS"
MAX_WORKERS = 4


def default_workers(tasks: int) -> int:
    """Processes to use for ``tasks`` tasks: up to the CPUs, at most :data:`MAX_WORKERS`."""
    return max(1, min(tasks, os.cpu_count() or 1, MAX_WORKERS))


def map_in_processes(fn: Callable, tasks: Iterable, workers: int = 1) -> Iterator:
    """Yield ``fn(task)`` for each task, in the tasks' order, from up to ``workers`` processes.

    With ``workers <= 1`` it runs in this process. ``fn`` must be a
    module-level function and the tasks picklable. An exception in a task is
    raised here (the tasks not yet started are cancelled).
    """
    tasks = list(tasks)
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield fn(task)
        return
    previous = os.environ.get(NO_KERAS_ENV)
    os.environ[NO_KERAS_ENV] = "1"  # inherited by the spawned processes
    pool = ProcessPoolExecutor(min(workers, len(tasks)), mp_context=get_context("spawn"))
    try:
        futures = [pool.submit(fn, task) for task in tasks]
        for future in futures:
            yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if previous is None:
            os.environ.pop(NO_KERAS_ENV, None)
        else:
            os.environ[NO_KERAS_ENV] = previous
