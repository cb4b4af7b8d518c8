"""Training on imbalanced classes: class-balanced epochs, or loss weights by inverse class frequency
(multi-label: positive weights by each label's negatives over its positives).

Both make every class count equally in training, where plain epochs let the classes with most clips
set the model (and the accuracy hide a class it never predicts). Balanced epochs keep the epoch's
length and draw each class equally often: a small class's clips are repeated (in turns, so each
comes around before any comes again) and a large class's are subsampled, a different subset each epoch.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Sequence

BALANCE = ("none", "sampler", "weights")


def balanced_order(labels: Sequence[int], rng: random.Random) -> list[int]:
    """len(labels) indices of `labels` in a random order, every class drawn equally often (±1)."""
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_class[label].append(i)
    classes = sorted(by_class)
    share, extra = divmod(len(labels), len(classes))
    lucky = set(rng.sample(classes, extra))  # who draws one more, when the epoch does not divide evenly
    order: list[int] = []
    for label in classes:
        wanted, drawn = share + (label in lucky), []
        while len(drawn) < wanted:
            turn = by_class[label][:]
            rng.shuffle(turn)
            drawn += turn
        order += drawn[:wanted]
    rng.shuffle(order)
    return order


def class_weights(labels: Sequence[int], num_classes: int) -> list[float]:
    """Loss weights by inverse class frequency, N / (C · n_c) over the C classes with clips: each class
    weighs N / C in all, and every weight is 1 when the classes are equal. A class with no clip gets 0
    (it has nothing to weigh; the split check reports it)."""
    counts = Counter(labels)
    return [len(labels) / (len(counts) * counts[c]) if counts[c] else 0.0 for c in range(num_classes)]


def positive_weights(label_sets: Sequence[tuple[int, ...]], num_labels: int) -> list[float]:
    """Multi-label loss weights: each label's positive term weighed by its negatives over its positives,
    so that a rare label's few positives count as much as its many negatives (BCE's `pos_weight`). A
    label with no positive gets 1 (the split check reports it)."""
    positives = Counter(label for labels in label_sets for label in labels)
    n = len(label_sets)
    return [(n - positives[i]) / positives[i] if positives[i] else 1.0 for i in range(num_labels)]
