"""What a training run shows and leaves behind: the progress bar, the per-epoch table on stderr,
metrics.csv and curves.png in the run folder.
"""

from __future__ import annotations

import contextlib
import csv
import os
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from vidclf.errors import WriteError

METRIC_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_class_acc", "val_map", "lr",
                  "seconds", "clips_per_s", "data_wait", "train_clips", "val_clips")


def epoch_progress(console: Console, epoch: int, epochs: int, *, enabled: bool) -> Progress:
    """A transient bar for one epoch's steps; never drawn into a log file or pipe."""
    return Progress(
        TextColumn(f"epoch {epoch + 1}/{epochs}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f} acc {task.fields[acc]:.3f} {task.fields[rate]:.1f} clips/s"),
        TimeElapsedColumn(), console=console, transient=True, disable=not (enabled and console.is_terminal),
    )


class EpochLog:
    """One table row per epoch on stderr, and metrics.csv and curves.png beside the checkpoints.

    `run_dir` is None on ranks other than the main one: they write nothing. A multi-label run's
    accuracies are shares of exactly right label sets, and its last column is mAP, not class accuracy.
    """

    def __init__(self, console: Console, run_dir: Path | None, *, multi_label: bool = False):
        self.console = console
        self.run_dir = run_dir
        self.header_shown = False
        self.last = ("val_map", "  val mAP") if multi_label else ("val_class_acc", "class acc")
        self.acc = ("train set", "val set") if multi_label else ("train acc", "val acc")

    def add(self, row: dict, history: list[dict]) -> None:
        self._print(row)
        if self.run_dir is None:
            return
        self._write_csv(history)
        from vidclf.plots import save_curves

        # A full disk or a read-only folder stops the run here (a WriteError): the checkpoint that
        # follows could not be written either, and the previous one is still whole.
        save_curves(history, self.run_dir / "curves.png")

    def _print(self, row: dict) -> None:
        if not self.header_shown:
            self.console.print(f"[bold]epoch  train loss  {self.acc[0]}  val loss  {self.acc[1]}  {self.last[1]}       lr"
                               "    time  clips/s  wait")
            self.header_shown = True

        def num(v, fmt):
            return format(v, fmt) if v is not None else "-"

        self.console.print(
            f"{row['epoch']:>5}  {row['train_loss']:>10.4f}  {row['train_acc']:>9.3f}  "
            f"{num(row['val_loss'], '>8.4f'):>8}  {num(row['val_acc'], '>7.3f'):>7}  "
            f"{num(row[self.last[0]], '>9.3f'):>9}  {row['lr']:>7.1e}  "
            f"{row['seconds']:>5.1f}s  {row['clips_per_s']:>7.1f}  {row['data_wait']:>4.0%}"
        )

    def _write_csv(self, history: list[dict]) -> None:
        """metrics.csv anew from the run's history, through a temporary file renamed over it: a resumed
        run's file is its checkpoint's history (no row twice when the run stopped after writing a row
        and before its checkpoint), and a write that fails leaves the previous file and raises a WriteError."""
        path = self.run_dir / "metrics.csv"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS, restval="")  # rows of older versions lack columns
                writer.writeheader()
                writer.writerows(history)
            os.replace(tmp, path)
        except OSError as err:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise WriteError(path, err) from err
