"""Metrics of a trained model over a dataset split: accuracy, top-k, per-class P/R/F1, confusion."""

from __future__ import annotations

from typing import Iterator

import torch

from vidclf.datasets import Batch
from vidclf.device import autocast
from vidclf.preprocess import Preprocess, to_model_input


def iter_logits(model: torch.nn.Module, loader, pre: Preprocess, device: torch.device,
                dtype: torch.dtype | None = None) -> Iterator[tuple[Batch, torch.Tensor]]:
    """Run the model over a loader of `Batch`es; yields each batch with its float32 logits on the CPU."""
    model.eval()
    with torch.inference_mode():
        for batch in loader:
            if len(batch.lengths) == 0:
                yield batch, torch.zeros(0, 0)
                continue
            clips = batch.clips.to(device, non_blocking=True)
            lengths = batch.lengths.to(device, non_blocking=True)
            with autocast(device, dtype):
                logits = model(to_model_input(clips, lengths, pre), lengths)
            yield batch, logits.float().cpu()


def compute_metrics(confusion: torch.Tensor, *, top_k_correct: int, classes: list[str], k: int) -> dict:
    """Everything `vidclf evaluate` reports, from a confusion matrix (rows: true, columns: predicted)."""
    confusion = confusion.long()
    total = int(confusion.sum())
    tp = confusion.diag().double()
    support = confusion.sum(dim=1).double()
    predicted = confusion.sum(dim=0).double()
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(support > 0, tp / support.clamp(min=1), torch.zeros_like(tp))
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12),
                     torch.zeros_like(tp))
    present = support > 0
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "top_k_accuracy": {str(k): top_k_correct / total if total else 0.0},
        "mean_class_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "classes": classes,
        "per_class": [
            {"class": c, "precision": float(precision[i]), "recall": float(recall[i]),
             "f1": float(f1[i]), "support": int(support[i])}
            for i, c in enumerate(classes)
        ],
        "confusion_matrix": confusion.tolist(),
        "num_clips": total,
    }


def evaluate(model: torch.nn.Module, loader, *, pre: Preprocess, classes: list[str], device: torch.device,
             dtype: torch.dtype | None = None, k: int = 5, progress=None) -> dict:
    """Metrics over every readable clip in the loader; unreadable ones are listed under `failed`."""
    n = len(classes)
    k = min(k, n)
    confusion = torch.zeros(n, n, dtype=torch.long)
    top_k_correct = 0
    failed = []
    for batch, logits in iter_logits(model, loader, pre, device, dtype):
        failed += [{"path": f.path, "error": f.reason} for f in batch.failures]
        if len(logits):
            predicted = logits.argmax(dim=1)
            confusion += torch.bincount(batch.labels * n + predicted, minlength=n * n).view(n, n)
            top = logits.topk(k, dim=1).indices
            top_k_correct += int((top == batch.labels[:, None]).any(dim=1).sum())
        if progress is not None:
            progress(len(batch.lengths) + len(batch.failures))
    return {**compute_metrics(confusion, top_k_correct=top_k_correct, classes=classes, k=k), "failed": failed}


def save_confusion_plot(confusion: list[list[int]], classes: list[str], path: str) -> None:
    """A confusion-matrix heat map as PNG, drawn with OpenCV so no plotting library is needed."""
    import cv2
    import numpy as np

    m = np.asarray(confusion, dtype=np.float64)
    rows = m / np.maximum(m.sum(axis=1, keepdims=True), 1)  # each true class's row sums to 1
    n, cell, margin = len(classes), 48, 140
    image = np.full((margin + n * cell + 10, margin + n * cell + 10, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for i in range(n):
        for j in range(n):
            shade = int(255 * (1 - rows[i, j]))
            y, x = margin + i * cell, margin + j * cell
            cv2.rectangle(image, (x, y), (x + cell - 1, y + cell - 1), (255, shade, shade), -1)
            colour = (255, 255, 255) if rows[i, j] > 0.5 else (0, 0, 0)
            cv2.putText(image, str(int(m[i, j])), (x + 6, y + cell // 2 + 5), font, 0.45, colour, 1, cv2.LINE_AA)
        cv2.putText(image, classes[i][:16], (4, margin + i * cell + cell // 2 + 5), font, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
        label = np.full((cell, margin - 4, 3), 255, np.uint8)
        cv2.putText(label, classes[i][:16], (4, cell // 2 + 5), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        image[4 : margin, margin + i * cell : margin + (i + 1) * cell] = np.rot90(label)[: margin - 4]
    cv2.putText(image, "true \\ predicted", (4, 20), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    if not cv2.imwrite(path, image):
        raise OSError(f"{path}: could not write the plot (is the folder there, and the name .png?)")
