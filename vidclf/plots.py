"""Training curves and confusion matrices as image files, for looking at a run without a notebook.

matplotlib is imported inside the functions (so `vidclf --help` stays fast) and drawn on its Agg canvas
through the object-oriented `Figure` API: no display is needed and no pyplot state is shared between calls.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from vidclf.errors import WriteError

ANNOTATE_UP_TO = 30  # classes; past this, counts in the cells would be too small to read
MAX_INCHES = 20.0  # the confusion figure grows with the classes up to this side
MIN_LABEL_PT = 6.0  # tick labels smaller than this are thinned out instead


def normalise_rows(confusion) -> np.ndarray:
    """Each true class's row divided by its count, so classes of any size compare; empty rows stay 0."""
    m = np.asarray(confusion, dtype=np.float64)
    sums = m.sum(axis=1, keepdims=True)
    return m / np.where(sums == 0, 1, sums)


def save_curves(history: list[dict], path: str | Path) -> Path:
    """Loss and accuracy per epoch, train beside validation, so over- and under-fitting show at a glance.

    `history` holds train's rows (epoch, train_loss, train_acc, val_loss, val_acc, ...); validation points
    that are None (no validation split) are left out. Rewritten atomically: train calls this every epoch.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(11, 4), layout="constrained")
    for ax, metric in zip(fig.subplots(1, 2), ["loss", "acc"]):
        for split in ["train", "val"]:
            points = [(r["epoch"], r[f"{split}_{metric}"]) for r in history if r.get(f"{split}_{metric}") is not None]
            if points:
                marker = "o" if len(points) <= 50 else None  # a lone epoch still shows; many would blot the line
                ax.plot(*zip(*points), marker=marker, markersize=4, label="validation" if split == "val" else split)
        if metric == "acc":
            ax.set_ylim(-0.02, 1.02)
        ax.set_title("accuracy" if metric == "acc" else "loss")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        if epochs:  # half an epoch of margin: a single epoch gets one tick, not fractions
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    return _save(fig, path)


def save_confusion(confusion: list[list[int]], classes: list[str], path: str | Path) -> Path:
    """`confusion_figure` as an image file."""
    return _save(confusion_figure(confusion, classes), path)


def confusion_figure(confusion: list[list[int]], classes: list[str]):
    """The confusion matrix as a heat map normalised per true class, to see which classes get mixed up.

    Cells carry their counts up to 30 classes; the figure grows with the classes (capped at 20 inches)
    and tick labels are thinned when they would overlap, so 100 classes still render.
    """
    from matplotlib.figure import Figure

    try:
        counts = np.asarray(confusion, dtype=np.float64)
    except ValueError as e:  # rows of different lengths, or not numbers
        raise ValueError(f"confusion should be a square matrix of counts: {e}") from e
    n = len(classes)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] != n or n == 0:
        raise ValueError(f"confusion should be a square matrix with one row and column per class "
                         f"({n} classes), got shape {counts.shape}")
    rows = normalise_rows(counts)
    side = min(MAX_INCHES, 3.0 + 0.45 * n)  # inches; the labels and colour bar take about 3
    cell_pt = (side - 3.0) * 72 / n  # points per cell on the axes
    font = min(10.0, cell_pt * 0.7)  # x labels at 60 degrees need font / sin(60) < cell_pt not to overlap
    step = max(1, int(np.ceil(MIN_LABEL_PT / font)))  # label every step-th class when they would overlap
    font = max(font, MIN_LABEL_PT)

    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(rows, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of the true class")
    ticks = np.arange(0, n, step)
    names = [classes[i] if len(classes[i]) <= 24 else classes[i][:23] + "…" for i in ticks]
    ax.set_xticks(ticks, names, rotation=60, ha="right", rotation_mode="anchor", fontsize=font)
    ax.set_yticks(ticks, names, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix, {n} classes, {int(counts.sum())} clips (rows sum to 1)")
    if n <= ANNOTATE_UP_TO:
        for i, j in np.ndindex(n, n):
            ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=font * 0.9,
                    color="white" if rows[i, j] > 0.5 else "black")
    return fig


def _save(fig, path: str | Path) -> Path:
    """Write to a temporary file in the same folder, then rename, so a reader never sees half an image
    and a full disk or a read-only folder leaves the previous image; that raises a WriteError naming
    the file and the OS's reason."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # open() rather than mkstemp: keeps the umask's mode
    try:
        with open(tmp, "wb") as f:
            fig.savefig(f, format=path.suffix.lstrip(".").lower() or "png", dpi=100)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):  # a read-only folder holds no temporary to remove
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise WriteError(path, e) from e
        raise
    return path
