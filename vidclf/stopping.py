"""When training stops or saves mid-epoch: decided by every rank together, from signals and a clock.

A scheduler signals every process of a job, but not at the same instant, and under torchrun a rank
that stopped alone would leave the others waiting in an all-reduce it never joins. So every EVERY
steps the ranks sum their flags (a stop was asked for; rank 0's clock says a save is due) and all act
on the sum. The sum runs on a CPU (gloo) group of its own, started after step k and read after step
k+1: it overlaps a whole step and never waits on the GPU, and every rank reads the same answer, so
all stop, or save, after the same step. One process needs no sum and acts on its flags at once.

Every 4th step rather than every step: with two ranks on two CPU cores (benchmarks/stopping.py) a
sum alone takes 0.4-0.5 ms, and steps of 121 ms with it every step ran 1.007-1.019x the bare step,
every 4th 0.998-1.017x: within the noise, but a quarter of the work for a stop that waits at most
5 steps. A GPU leaves the host thread idle while kernels run, so there it should cost less still.
"""

from __future__ import annotations

import contextlib
import signal
import time
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist


class StopSignal:
    """Set by Ctrl-C or SIGTERM; the loop finishes its step, writes last.pt and returns."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum=None, frame=None) -> None:
        self.requested = True

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Ctrl-C and SIGTERM set the flag while training; the previous handlers come back after it
        (a caller in the same process, a test runner say, must still be able to stop)."""
        previous = {sig: signal.signal(sig, self) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


EVERY = 4  # steps between the ranks' sums of their flags


@dataclass(frozen=True)
class Decision:
    stop: bool = False  # some rank was asked to stop: all write last.pt and return
    save: bool = False  # rank 0's --save-every clock ran out: last.pt is written mid-epoch


class Agreement:
    """The stop and save decisions of all ranks, taken after the same step on every one."""

    def __init__(self, stop: StopSignal, *, save_every: float, is_main: bool, every: int = EVERY):
        self.stop = stop
        self.save_every = save_every  # seconds between mid-epoch saves; 0: only at the end of epochs
        self.is_main = is_main
        self.every = every  # steps between sums
        self.saved_at = time.monotonic()
        self.group = dist.new_group(backend="gloo") if dist.is_initialized() else None
        self.pending: tuple[dist.Work, torch.Tensor] | None = None  # the sum started after the last step
        self.steps = 0  # steps of this epoch

    def after_step(self) -> Decision:
        """What to do after this step: alone, what the flags say now; across ranks, what they all said
        when the last sum was started, a step ago (after other steps: nothing)."""
        if self.group is None:
            return _decision(self._flags())
        decision, self.pending = self._read(self.pending), None
        self.steps += 1
        if self.steps % self.every == 0:
            flags = self._flags()
            self.pending = dist.all_reduce(flags, group=self.group, async_op=True), flags
        return decision

    def epoch_end(self) -> Decision:
        """The answer of a sum started after the epoch's last step, so that none is left pending."""
        decision, self.pending, self.steps = self._read(self.pending), None, 0
        return decision

    def stop_now(self) -> bool:
        """Whether any rank was asked to stop, agreed at once: between epochs, where no step waits."""
        flags = torch.tensor([float(self.stop.requested)])
        if self.group is not None:
            dist.all_reduce(flags, group=self.group)
        return bool(flags[0] > 0)

    def together(self) -> None:
        """Wait until every rank is here."""
        if self.group is not None:
            dist.barrier(group=self.group)

    def saved(self) -> None:
        """last.pt was written: the --save-every clock starts again."""
        self.saved_at = time.monotonic()

    def _flags(self) -> torch.Tensor:
        due = self.is_main and self.save_every > 0 and time.monotonic() - self.saved_at >= self.save_every
        return torch.tensor([float(self.stop.requested), float(due)])

    @staticmethod
    def _read(pending: tuple[dist.Work, torch.Tensor] | None) -> Decision:
        if pending is None:
            return Decision()
        work, flags = pending
        work.wait()
        return _decision(flags)


def _decision(flags: torch.Tensor) -> Decision:
    stop, save = (bool(v > 0) for v in flags)
    return Decision(stop=stop, save=save)
