"""Live curves in TensorBoard (`train --tensorboard`): event files in the run folder, written by rank 0.

Per step the training loss and learning rate, per epoch the metrics table's columns, at the end the
confusion matrix; all on one x axis, the optimizer step (counted from 0), so that a resumed run
continues the same curves: it starts by purging whatever the interrupted run wrote past its last.pt
(TensorBoard's purge_step), and every step is then written once. An epoch's row sits on its last step.

Step losses are kept on the device and read back a few at a time: reading each one as it is made
would make the CPU wait for the GPU every step.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from vidclf.errors import VidclfError

EPOCH_SCALARS = ("train_loss", "train_acc", "val_loss", "val_acc", "val_class_acc", "val_map", "lr", "clips_per_s",
                 "data_wait")
READ_EVERY = 2.0  # seconds between reads of the step losses held on the device


def require() -> None:
    """Fail at once, before any data is read, when the optional package is missing."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise VidclfError("--tensorboard needs the tensorboard package: pip install 'vidclf[tensorboard]'") from None


class BoardLog:
    def __init__(self, run_dir: Path, *, first_step: int):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step 0 too: a run started again in its folder (killed before its first last.pt) starts clean
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=first_step)
        self.held: list[tuple[int, torch.Tensor, float]] = []  # (step, loss on the device, learning rate)
        self.read_at = time.monotonic()

    def step(self, step: int, loss: torch.Tensor, lr: float) -> None:
        self.held.append((step, loss, lr))
        if time.monotonic() - self.read_at >= READ_EVERY:
            self.flush()

    def epoch(self, row: dict, step: int) -> None:
        self.flush()
        for key in EPOCH_SCALARS:
            if row[key] is not None:
                self.writer.add_scalar(f"epoch/{key}", row[key], step)
        self.writer.flush()

    def confusion(self, confusion: torch.Tensor, classes: list[str], step: int) -> None:
        from vidclf.plots import confusion_figure

        self.writer.add_figure("val/confusion_matrix", confusion_figure(confusion.tolist(), classes), step)

    def flush(self) -> None:
        if self.held:
            losses = torch.stack([loss for _, loss, _ in self.held]).tolist()
            for (step, _, lr), loss in zip(self.held, losses):
                self.writer.add_scalar("step/loss", loss, step)
                self.writer.add_scalar("step/lr", lr, step)
            self.held = []
        self.read_at = time.monotonic()
        self.writer.flush()

    def close(self) -> None:
        self.flush()
        self.writer.close()
