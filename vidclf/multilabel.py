"""Multi-label scoring: the loss, average precision, per-label thresholds and the metrics at them.

A multi-label model scores every label on its own (a sigmoid each), so a clip may carry any set of
labels, none included. Its quality is measured by ranking (AP per label, mAP over labels) and, once
each label has its threshold, by the sets it predicts (P/R/F1 per label and per clip, exact sets).
Everything here works on probabilities `probs` and 0/1 `targets`, both (N clips, L labels).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

DEFAULT_THRESHOLD = 0.5  # a label with too few validation positives to choose from
MIN_POSITIVES = 3  # validation positives a label needs before its threshold is chosen from them
THRESHOLD_FLOOR = 0.05  # no chosen threshold is lower: a label is never predicted at near-zero confidence


def bce_loss(logits: torch.Tensor, targets: torch.Tensor, *, pos_weight: torch.Tensor | None = None,
             smoothing: float = 0.0) -> torch.Tensor:
    """Binary cross-entropy of each label, averaged over clips and labels; targets pulled towards ½ by
    `smoothing` (y(1 − s) + s/2, as label smoothing pulls towards the uniform); `pos_weight` (L,)
    multiplies each label's positive term (--balance weights). Linear in the targets, so mixed clips'
    loss is the mix of the losses against both clips' labels, as with cross-entropy."""
    targets = targets.float() * (1 - smoothing) + smoothing / 2
    return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight)


def exact_sets(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Clips whose labels above ½ are exactly their targets (the training table's accuracy): a count."""
    return ((logits > 0) == (targets > 0.5)).all(dim=1).sum()


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float | None:
    """AP of one label: Σ_k (R_k − R_(k−1)) P_k over the distinct scores from the highest down, the
    precision at each recall step (scikit-learn's `average_precision_score`: no interpolation; tied
    scores enter together). None without a positive, where AP is undefined."""
    positives = int(targets.sum())
    if positives == 0:
        return None
    _, tp, predicted = _cuts(scores, targets)
    recall_step = torch.diff(tp, prepend=torch.zeros(1)) / positives
    return float((recall_step * tp / predicted).sum())


def mean_average_precision(probs: torch.Tensor, targets: torch.Tensor, labels: Sequence[str]) -> dict:
    """mAP over the labels with a positive among the clips, each label's AP, and the labels left out."""
    aps = [average_precision(probs[:, i], targets[:, i]) for i in range(len(labels))]
    scored = [ap for ap in aps if ap is not None]
    return {"map": sum(scored) / len(scored) if scored else None, "ap": aps,
            "left_out": [label for label, ap in zip(labels, aps) if ap is None]}


def choose_thresholds(probs: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """A threshold per label, chosen on validation clips: the one of highest F1.

    The rule: a label with fewer than MIN_POSITIVES positives keeps DEFAULT_THRESHOLD (a cut chosen
    from one or two clips fits them, not the label). Otherwise, predicting the label for the clips
    scored at or above each distinct score in turn, the cut with the highest F1 (the higher cut on a
    tie: fewer false positives) is placed midway between the lowest score it keeps and the next
    lower one (or half the lowest, when it keeps all), since any value in that gap gives the same F1
    and the middle is farthest from both; then raised to THRESHOLD_FLOOR when below it.
    """
    return [_threshold(probs[:, i], targets[:, i]) for i in range(probs.shape[1])]


def _threshold(scores: torch.Tensor, targets: torch.Tensor) -> float:
    positives = int(targets.sum())
    if positives < MIN_POSITIVES:
        return DEFAULT_THRESHOLD
    cut, tp, predicted = _cuts(scores, targets)
    best = int(torch.argmax(2 * tp / (predicted + positives)))  # F1's first maximum: the highest cut
    below = float(cut[best + 1]) if best + 1 < len(cut) else 0.0
    return max(THRESHOLD_FLOOR, (float(cut[best]) + below) / 2)


def _cuts(scores: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Predicting a label for the clips scored at or above each distinct score, from the highest
    down: (the distinct scores, true positives, clips predicted) of each cut, float64."""
    order = torch.argsort(scores, descending=True, stable=True)
    scores, hits = scores[order].double(), targets[order].double()
    last_of_ties = torch.cat([scores[1:] != scores[:-1], torch.tensor([True])])  # where a distinct score ends
    predicted = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    return scores[last_of_ties], hits.cumsum(0)[last_of_ties], predicted[last_of_ties]


def predicted_sets(probs: torch.Tensor, thresholds: Sequence[float]) -> torch.Tensor:
    """0/1 (N, L): each label at or above its threshold."""
    return (probs >= torch.tensor(thresholds, dtype=probs.dtype)).long()


def set_metrics(probs: torch.Tensor, targets: torch.Tensor, thresholds: Sequence[float], labels: Sequence[str]) -> dict:
    """The predicted sets at `thresholds` against the targets: per label P/R/F1 and support, the same
    averaged over clips (a clip with neither a true nor a predicted label counts 1 on all three; any
    other zero denominator counts 0), and the share of clips whose set is exactly right."""
    pred, true = predicted_sets(probs, thresholds).double(), targets.double()
    hit = pred * true
    per_label = [{"label": label, **_prf(hit[:, i].sum(), pred[:, i].sum(), true[:, i].sum()),
                  "support": int(true[:, i].sum()), "threshold": round(float(thresholds[i]), 6)}
                 for i, label in enumerate(labels)]
    clips = [_prf(h, p, t) for h, p, t in zip(hit.sum(1), pred.sum(1), true.sum(1))]
    n = max(len(clips), 1)
    samples = {key: sum(c[key] for c in clips) / n for key in ("precision", "recall", "f1")}
    exact = float((pred == true).all(dim=1).double().mean()) if len(clips) else 0.0
    return {"per_label": per_label, "samples": samples, "exact_set": exact}


def _prf(hit: torch.Tensor, predicted: torch.Tensor, true: torch.Tensor) -> dict:
    hit, predicted, true = float(hit), float(predicted), float(true)
    if predicted == true == 0:
        return {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    precision = hit / predicted if predicted else 0.0
    recall = hit / true if true else 0.0
    f1 = 2 * hit / (predicted + true)
    return {"precision": precision, "recall": recall, "f1": f1}


def multilabel_metrics(probs: torch.Tensor, targets: torch.Tensor, thresholds: Sequence[float],
                       labels: Sequence[str]) -> dict:
    """Everything `vidclf evaluate` reports of a multi-label model: mAP (and the labels left out for
    want of a positive), and the set metrics at the thresholds, each label's AP beside its P/R/F1."""
    ranking = mean_average_precision(probs, targets, labels)
    sets = set_metrics(probs, targets, thresholds, labels)
    for row, ap in zip(sets["per_label"], ranking["ap"]):
        row["ap"] = ap
    return {"map": ranking["map"], "map_left_out": ranking["left_out"], "exact_set": sets["exact_set"],
            "samples": sets["samples"], "per_label": sets["per_label"], "num_clips": len(probs)}
