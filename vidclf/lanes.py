"""Lanes: on a CPU node every core takes turns decoding a batch and running the model on it.

Predict on a CPU used to decode in worker processes beside a model that had one intra-op thread per
core: together they asked for more cores than there are, and the model's threads, which wait for
each other at the end of every operation, lost a third of the machine (issue 31). Here `count` lanes
each take a job (the next batch of files, or the next windows of a video) and run it: a lane's
thread either waits for decoding (its own child, or the video's) or runs the model with
`threads` intra-op threads, so the lanes ask for `count × threads` cores at most, and a lane's
model never waits for a thread that a decoder holds. Jobs are numbered in the order they are
taken, and their results come back in that order. `keep_freed_memory` stops the process handing
each batch's memory back to the kernel, which cost the model up to two fifths of its time in page faults.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import threading
from typing import Callable, ContextManager, Iterator, TypeVar

import torch

# glibc's mallopt parameters
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
KEEP_BYTES = 1 << 30  # blocks up to this size come from the heap, and a heap's free top up to it stays

Job = TypeVar("Job")
Result = TypeVar("Result")


def in_lanes(count: int, take: Callable[[], Job | None], lane: Callable[[int], ContextManager[Callable[[Job], Result]]],
             *, threads: int = 1) -> Iterator[Result]:
    """`run(job)` for each job `take()` gives until None, in `count` threads, the results in the order taken.

    `take` runs under a lock (so it may read a shared source: the windows of one video); `lane(i)`
    gives lane i's `run` and frees what it holds on exit (its decoding child). The model in `run`
    gets `threads` intra-op threads. Lanes take at most 2 × `count` jobs past the caller. A job's
    error is raised at its place; a caller that stops early stops the lanes after their current job.
    """
    board = _Board(ahead=2 * count)
    caller_threads = torch.get_num_threads()
    workers = [threading.Thread(target=_lane, args=(board, take, lane, i, threads), daemon=True, name="vidclf-lane")
               for i in range(count)]
    for worker in workers:
        worker.start()
    try:
        yield from board.results()
    finally:
        board.stop()
        for worker in workers:
            worker.join()  # a lane inside a stalled read ends at the watchdog's timeout
        torch.set_num_threads(caller_threads)  # also the default that threads started later take


def keep_freed_memory() -> None:
    """Linux (glibc): keep the memory that a batch's tensors free for the next batch, instead of handing
    it back to the kernel.

    glibc maps each block over a threshold (adaptive, at most 32 MB) afresh and unmaps it when freed,
    trims the heap's top, and gives each thread an arena whose heaps it unmaps when empty: a batch's
    input and activations then fault every page in again, zero-filled by the kernel. On the 2-core
    machine that was 27,000 page faults a batch and 9.4 against 5.6 ms a clip for a one-thread forward
    pass of the CNN+LSTM, and the adaptive threshold moved the model's speed by up to 1.7× from one
    run to the next. So large blocks come from the heap, its top is kept, and all threads share the
    main arena (arenas are per thread only for contention on small allocations, which tensors are
    not). The process keeps its peak memory; for predict, a few batches. A no-op elsewhere.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return  # not glibc
    for parameter, value in ((M_MMAP_THRESHOLD, KEEP_BYTES), (M_TRIM_THRESHOLD, KEEP_BYTES), (M_ARENA_MAX, 1)):
        mallopt(parameter, value)


def _lane(board: _Board, take: Callable, lane: Callable, index: int, threads: int) -> None:
    torch.set_num_threads(threads)  # this thread's own setting (OpenMP's, MKL's): the caller's stays
    with contextlib.ExitStack() as stack:
        try:
            run = stack.enter_context(lane(index))
        except BaseException as err:  # noqa: BLE001  (a lane that cannot start fails the jobs it takes)
            run = functools.partial(_raise, err)
        while (taken := board.take(take)) is not None:
            number, job = taken
            try:
                board.put(number, run(job))
            except BaseException as err:  # noqa: BLE001  (raised again in the caller's thread)
                board.put(number, error=err)


def _raise(error: BaseException, _job: object) -> None:
    raise error


class _Board:
    """Jobs numbered as lanes take them, and their results, handed to the caller in that order."""

    def __init__(self, ahead: int):
        self.ahead = ahead
        self._taken = 0  # jobs numbered so far
        self._given = 0  # results the caller has had
        self._ended = False  # `take` gave None, or failed
        self._stopped = False
        self._results: dict[int, tuple[object, BaseException | None]] = {}
        self._changed = threading.Condition()

    def take(self, take: Callable) -> tuple[int, object] | None:
        with self._changed:
            self._changed.wait_for(lambda: self._stopped or self._ended or self._taken < self._given + self.ahead)
            if self._stopped or self._ended:
                return None
            number = self._taken
            try:
                job = take()
            except BaseException as err:  # noqa: BLE001  (the source failed: an error in its place, then the end)
                self._results[number], self._taken, self._ended = (None, err), number + 1, True
                self._changed.notify_all()
                return None
            if job is None:
                self._ended = True
                self._changed.notify_all()
                return None
            self._taken = number + 1
            return number, job

    def put(self, number: int, result: object = None, error: BaseException | None = None) -> None:
        with self._changed:
            self._results[number] = (result, error)
            self._changed.notify_all()

    def results(self) -> Iterator:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._given in self._results or (self._ended and self._given >= self._taken))
                if self._given not in self._results:
                    return  # every job taken has been given
                result, error = self._results.pop(self._given)
                self._given += 1
                self._changed.notify_all()
            if error is not None:
                raise error
            yield result

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
