"""Metrics of a trained model over a dataset split: accuracy, top-k, per-class P/R/F1, confusion.

Which videos make up a split is decided here (with the training run's split settings), so that
`vidclf evaluate` only parses options and prints.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch

from vidclf import distributed
from vidclf.checkpoint import Classifier
from vidclf.data.datasets import Batch, ClipDataset, EpochSampler, clip_loader
from vidclf.data.files import Sample, scan
from vidclf.data.labels import label_set, with_targets
from vidclf.data.decoder import Decoder
from vidclf.device import autocast
from vidclf.errors import DatasetError
from vidclf.multilabel import multilabel_metrics, predicted_sets
from vidclf.preprocess import Preprocess, channels_first, to_model_input


def iter_logits(model: torch.nn.Module, loader, pre: Preprocess, device: torch.device,
                dtype: torch.dtype | None = None, *, features: bool = False) -> Iterator[tuple[Batch, torch.Tensor]]:
    """Run the model over a loader of `Batch`es; yields each batch with its float32 logits on the CPU
    (with `features`, the vectors before the head: `forward_features`)."""
    model.eval()
    forward = model.forward_features if features else model
    with torch.inference_mode():
        for batch in loader:
            if len(batch.lengths) == 0:
                yield batch, torch.zeros(0, 0)
                continue
            clips = channels_first(batch.clips.to(device, non_blocking=True))
            lengths = batch.lengths.to(device, non_blocking=True)
            with autocast(device, dtype):
                logits = forward(to_model_input(clips, lengths, pre), lengths)
            yield batch, logits.float().cpu()


def per_video(rows: torch.Tensor, views: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B·V, D) rows, V consecutive views per video → (the video's row, its centre clip's row), each (B, D).

    With several views, a video's row is the mean over views 1… (view 0 is the centre clip alone).
    """
    rows = rows.view(-1, views, rows.shape[1])  # (B·V, D) → (B, V, D)
    return (rows[:, 1:].mean(dim=1) if views > 1 else rows[:, 0]), rows[:, 0]


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


SPLITS = ("val", "test", "train", "all")


def split_samples(source: str, split: str, classes: list[str], *, val_split: float = 0.2, seed: int = 0,
                  multi_label: bool = False) -> list[Sample]:
    """The videos of `split` in dataset `source`, labelled by the model's `classes` (for a `multi_label`
    model, with the tuples of the labels each video has).

    `val_split` and `seed` should be the training run's, so that "val" is the split it validated on.
    """
    if split not in SPLITS:
        raise ValueError(f"--split should be one of {', '.join(SPLITS)}, got {split!r}")
    splits = scan(source, val_split=val_split, seed=seed, multi_label=multi_label)
    if splits.multi_label and not multi_label:
        raise DatasetError(f"{source}: its clips have several labels and the model is single-label")
    chosen = splits.train + splits.val + splits.test if split == "all" else getattr(splits, split)
    if not chosen:
        raise DatasetError(f"{source}: the {split} split is empty")
    unknown = sorted(set(splits.classes) - set(classes))
    if unknown:
        raise DatasetError(f"{source}: classes the model does not know: {', '.join(unknown)}")
    if multi_label:
        return [Sample(p, tuple(sorted(classes.index(splits.classes[x]) for x in label_set(label)))) for p, label in chosen]
    return [Sample(p, classes.index(splits.classes[label])) for p, label in chosen]


def evaluation_loader(clf: Classifier, samples: list[Sample], *, device: torch.device, batch_size: int = 16,
                      workers: int = 0, decoder: Decoder | None = None, views: tuple[int, int] = (1, 1),
                      sampler=None) -> torch.utils.data.DataLoader:
    """Batches of `samples`' views, decoded as evaluation feeds them to the model: the one place that
    says so, so that what a report shows of a video is what the model saw. A multi-label model's
    batches carry (B, labels) 0/1 rows."""
    if clf.multi_label:
        samples = with_targets(samples, len(clf.classes))
    dataset = ClipDataset(samples, clf.preprocess, decoder=decoder, views=views)
    return clip_loader(dataset, batch_size=batch_size, workers=workers, device=device,
                       pad_to=clf.preprocess.num_frames, sampler=sampler)


def evaluate_samples(clf: Classifier, samples: list[Sample], *, device: torch.device, dtype: torch.dtype | None = None,
                     k: int = 5, batch_size: int = 16, workers: int = 0, decoder: Decoder | None = None,
                     views: tuple[int, int] = (1, 1), progress: Callable[[int], None] | None = None,
                     probabilities: bool = False) -> dict:
    """Metrics over `samples` with `views` (clips, crops) per video; under torchrun each rank takes its
    shard and the counts are summed, so every video counts exactly once."""
    rank = distributed.current()
    sampler = EpochSampler(len(samples), shuffle=False, rank=rank.rank, world=rank.world, pad=False)
    loader = evaluation_loader(clf, samples, device=device, batch_size=batch_size, workers=workers, decoder=decoder,
                               views=views, sampler=sampler)
    if clf.multi_label:
        return evaluate_multilabel(clf.model, loader, pre=clf.preprocess, labels=clf.classes, thresholds=clf.thresholds,
                                   device=device, dtype=dtype, progress=progress, probabilities=probabilities)
    return evaluate(clf.model, loader, pre=clf.preprocess, classes=clf.classes, device=device, dtype=dtype, k=k,
                    progress=progress, probabilities=probabilities)


def evaluate(model: torch.nn.Module, loader, *, pre: Preprocess, classes: list[str], device: torch.device,
             dtype: torch.dtype | None = None, k: int = 5, progress: Callable[[int], None] | None = None,
             probabilities: bool = False) -> dict:
    """Metrics over every readable video in the loader (summed over ranks); unreadable ones are listed
    under `failed`. `accuracy` scores each video by the mean of its views' probabilities,
    `clip_accuracy` by its centre clip alone (the same without multi-view testing).

    With `probabilities`, also each video's probabilities (the ones its accuracy counts), for a report of
    which videos fail: `probabilities` (float32 (N, classes), row i the dataset's video i, NaN where it
    could not be read), on every rank.
    """
    n = len(classes)
    k = min(k, n)
    confusion = torch.zeros(n, n, dtype=torch.long)
    top_k_correct = clip_correct = 0
    failed = []
    scored: list[tuple[torch.Tensor, torch.Tensor]] = []  # (dataset indices, video probabilities) per batch
    for batch, logits in iter_logits(model, loader, pre, device, dtype):
        failed += [{"path": f.path, "error": f.reason} for f in batch.failures]
        if len(logits):
            video, clip = per_video(logits.softmax(dim=1), batch.views)
            labels = batch.labels[:: batch.views]
            if probabilities:
                scored.append((batch.indices[:: batch.views], video))
            confusion += torch.bincount(labels * n + video.argmax(dim=1), minlength=n * n).view(n, n)
            top_k_correct += int((video.topk(k, dim=1).indices == labels[:, None]).any(dim=1).sum())
            clip_correct += int((clip.argmax(dim=1) == labels).sum())
        if progress is not None:
            progress(len(batch.lengths) // batch.views + len(batch.failures))
    *counts, top_k_correct, clip_correct = distributed.all_sum(
        confusion.flatten().tolist() + [top_k_correct, clip_correct], device)
    confusion = torch.tensor(counts).round().long().view(n, n)
    failed = [f for part in distributed.gather(failed) for f in part]
    metrics = compute_metrics(confusion, top_k_correct=int(top_k_correct), classes=classes, k=k)
    clip_accuracy = clip_correct / metrics["num_clips"] if metrics["num_clips"] else 0.0
    report = {"accuracy": metrics.pop("accuracy"), "clip_accuracy": clip_accuracy, **metrics, "failed": failed}
    if probabilities:
        report["probabilities"] = _gather_rows(scored, len(loader.dataset), n)
    return report


def _gather_rows(scored: list[tuple[torch.Tensor, torch.Tensor]], videos: int, classes: int) -> torch.Tensor:
    """Every rank's (indices, rows) placed into one (videos, classes) tensor; rows never scored stay NaN."""
    rows = torch.full((videos, classes), float("nan"))
    for part in distributed.gather(scored):
        for indices, probs in part:
            rows[indices] = probs
    return rows


def evaluate_multilabel(model: torch.nn.Module, loader, *, pre: Preprocess, labels: list[str], thresholds: list[float],
                        device: torch.device, dtype: torch.dtype | None = None,
                        progress: Callable[[int], None] | None = None, probabilities: bool = False) -> dict:
    """A multi-label model's metrics over every readable video in the loader (`multilabel.multilabel_metrics`
    of the mean of each video's views' sigmoid probabilities, at `thresholds`), with `clip_exact_set`
    of its centre clip alone; unreadable videos under `failed`. Every rank's probabilities are gathered
    (AP ranks all videos at once). With `probabilities`, also (N, labels) rows as `evaluate` gives them.
    """
    failed, scored = [], []  # scored: (dataset indices, video probabilities, centre clip's, targets) per batch
    for batch, logits in iter_logits(model, loader, pre, device, dtype):
        failed += [{"path": f.path, "error": f.reason} for f in batch.failures]
        if len(logits):
            video, clip = per_video(logits.sigmoid(), batch.views)
            scored.append((batch.indices[:: batch.views], video, clip, batch.labels[:: batch.views]))
        if progress is not None:
            progress(len(batch.lengths) // batch.views + len(batch.failures))
    scored = [part for rank_parts in distributed.gather(scored) for part in rank_parts]
    failed = [f for part in distributed.gather(failed) for f in part]
    empty = (torch.zeros(0, dtype=torch.long), *(torch.zeros(0, len(labels)),) * 3)
    indices, video, clip, targets = (torch.cat(column) for column in zip(*scored)) if scored else empty
    report = {"multi_label": True, **multilabel_metrics(video, targets, thresholds, labels)}
    clip_exact = (predicted_sets(clip, thresholds) == targets).all(dim=1).double().mean() if len(clip) else 0.0
    report = {**report, "clip_exact_set": float(clip_exact), "failed": failed}
    if probabilities:
        rows = torch.full((len(loader.dataset), len(labels)), float("nan"))
        rows[indices.long()] = video
        report["probabilities"] = rows
    return report
