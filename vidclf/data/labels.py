"""Label sets of multi-label datasets: a manifest cell read into labels, the seeded split that keeps a
training positive of every label, and the multi-hot targets a dataset serves.

A single-label sample's label is a class index (an int); a multi-label sample's is the tuple of the
indices of its labels, sorted, possibly empty (a clip showing none of them: a valid negative).
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Sequence

from vidclf.errors import DatasetError

SEPARATOR = ";"
FOREIGN = (",", "|")  # separators other tools use: in a label they are almost surely a mistake


def parse_cell(cell: str | None, *, where: str) -> tuple[str, ...]:
    """The labels of one manifest cell: `;`-separated, each stripped of surrounding spaces; an empty
    cell is no label. Raises a DatasetError naming `where` (FILE:LINE) for an empty label between
    separators or a label holding another tool's separator."""
    cell = (cell or "").strip()
    if not cell:
        return ()
    labels = tuple(part.strip() for part in cell.split(SEPARATOR))
    if any(not label for label in labels):
        raise DatasetError(f"{where}: empty label in {cell!r} (labels are separated by a single '{SEPARATOR}')")
    for label in labels:
        if foreign := next((s for s in FOREIGN if s in label), None):
            raise DatasetError(f"{where}: label {label!r} holds {foreign!r}: separate labels with '{SEPARATOR}'")
    if len(set(labels)) < len(labels):
        raise DatasetError(f"{where}: a label is listed twice in {cell!r}")
    return labels


def label_set(label: int | tuple[int, ...]) -> tuple[int, ...]:
    """The labels of a sample, single-label or multi-label, as a tuple."""
    return label if isinstance(label, tuple) else (label,)


def multi_hot(label: int | tuple[int, ...], num_labels: int) -> tuple[int, ...]:
    """The target row of a sample: 1 for each of its labels, 0 for the others."""
    present = set(label_set(label))
    return tuple(int(i in present) for i in range(num_labels))


def multilabel_split(samples: list, fraction: float, seed: int) -> tuple[list, list]:
    """Hold out about `fraction` of each label's positives, seeded, never a label's last training positive.

    Labels are served rarest first: each takes clips holding it into validation until it has
    round(fraction × its clips) there (at least one for a label with two or more clips); a clip whose
    move would leave any of its labels without a training positive stays in training. Clips with no
    label are held out in the same fraction. A model can only learn a label it has trained on, and a
    split by label combination would keep rare combinations out of validation entirely.
    """
    if not 0 <= fraction < 1:
        raise DatasetError(f"--val-split should be in [0, 1), got {fraction}")
    order = list(samples)
    random.Random(seed).shuffle(order)
    total = Counter(i for s in order for i in s.label)
    training, held = total.copy(), Counter()
    val: set[int] = set()
    for label in sorted(total, key=lambda i: (total[i], i)):
        want = round(total[label] * fraction)
        want = max(want, 1) if fraction > 0 and total[label] >= 2 else want
        for k, s in enumerate(order):
            if held[label] >= want:
                break
            if k in val or label not in s.label or any(training[i] <= 1 for i in s.label):
                continue
            val.add(k)
            training.subtract(s.label)
            held.update(s.label)
    negatives = [k for k, s in enumerate(order) if not s.label]
    val.update(negatives[: round(len(negatives) * fraction)])
    return (sorted(s for k, s in enumerate(order) if k not in val),
            sorted(s for k, s in enumerate(order) if k in val))


def with_targets(samples: Sequence, num_labels: int) -> list:
    """The samples with multi-hot targets for labels: what a multi-label dataset serves, so that a
    batch's labels are one (B, labels) tensor."""
    return [s._replace(label=multi_hot(s.label, num_labels)) for s in samples]
