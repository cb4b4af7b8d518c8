"""What is wrong with a dataset's splits, found before any video is decoded.

Hand-made splits go wrong silently: a class with no training clip still gets an output the model never
learns, a class with no validation clip is never measured, and a class ten times smaller than another
is one a model can learn never to predict. `train` and `vidclf check` report all three, `evaluate` the
model's classes missing from the split it scores. Messages say where, in the dataset's own layout
("data/val/up has 12 clips but data/train has no up/ folder"), so that the fix is plain.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple, Sequence

from vidclf.data.files import Sample, Splits
from vidclf.data.labels import label_set
from vidclf.errors import DatasetError

IMBALANCE_RATIO = 10
"""Largest over smallest training class at which `check_splits` warns.

Benchmark sets that train well with plain shuffling keep their classes within a few times of each
other (UCF101: 25 groups of 4–7 clips per class, at most 1.75× apart), and a warning that fires on
most real sets gets ignored. At 10× the smallest class weighs a tenth of the largest in every epoch's
loss, where a class the model never predicts becomes likely; it is also the ratio of the imbalanced
benchmark task that `--balance` is measured on.
"""
LISTED = 5  # classes named in one message; the rest are counted


class Finding(NamedTuple):
    level: str  # "error": the split cannot train as it is; "warning": it can, but the user should know
    message: str


def check_splits(splits: Splits, source: str | Path) -> list[Finding]:
    """Classes with no training clip (error), with no validation clip (warning, only when there is a
    validation split at all) and a largest/smallest training class ratio of IMBALANCE_RATIO or more.
    In a multi-label dataset a clip counts for each of its labels: the same findings, per label."""
    root, classes = Path(source), splits.classes
    train = _counts(splits.train, len(classes))
    findings = []
    untrained = [i for i, n in enumerate(train) if n == 0]
    if untrained:
        names, where = [classes[i] for i in untrained], [_no_training_clip(splits, root, i) for i in untrained]
        findings.append(Finding("error", f"no training clip of {_listed(names)}, so the model cannot learn "
                                         f"{'it' if len(names) == 1 else 'them'}: {_listed(where, '; ')}"))
    unmeasured = [c for c in without_clips(splits.val, classes) if train[classes.index(c)]]
    if splits.val and unmeasured:
        where = root / "val" if splits.layout == "splits" else root
        findings.append(Finding("warning", f"{where}: no validation clip of {_listed(unmeasured)}; "
                                           f"{_its(unmeasured)} accuracy is never measured"))
    sizes = sorted((n, c) for n, c in zip(train, classes) if n)
    if len(sizes) >= 2 and sizes[-1][0] >= IMBALANCE_RATIO * sizes[0][0]:
        (least, small), (most, large) = sizes[0], sizes[-1]
        remedy = ("--balance weights weighs each label's positives by its negatives" if splits.multi_label else
                  "--balance sampler draws every class equally often")
        findings.append(Finding("warning", f"{source}: imbalanced classes: {large} has {most} training clips, "
                                           f"{small} {least} ({most / least:.0f}×); {remedy}"))
    return findings


def raise_or_warn(findings: Sequence[Finding], warn: Callable[[str], None]) -> None:
    """Errors stop a run before it decodes anything (as a DatasetError); warnings go to `warn`."""
    for finding in findings:
        if finding.level == "error":
            raise DatasetError(finding.message)
    for finding in findings:
        warn(finding.message)


def without_clips(samples: Sequence[Sample], classes: Sequence[str]) -> list[str]:
    """The classes that no sample is labelled with."""
    present = {label for s in samples for label in label_set(s.label)}
    return [c for i, c in enumerate(classes) if i not in present]


def missing_from_split(samples: Sequence[Sample], classes: Sequence[str], *, source: str,
                       split: str) -> Finding | None:
    """For evaluate: a warning naming the model's classes that the evaluated split has no clip of."""
    missing = without_clips(samples, classes)
    if not missing:
        return None
    return Finding("warning", f"{source}: the {split} split has no clip of {_listed(missing)} (a class of the "
                              f"model): {_its(missing)} recall is not measured and {_its(missing)} support is 0")


def _counts(samples: Sequence[Sample], n: int) -> list[int]:
    counts = [0] * n
    for s in samples:
        for label in label_set(s.label):
            counts[label] += 1
    return counts


def _no_training_clip(splits: Splits, root: Path, label: int) -> str:
    """Where class `label`'s clips are and where its training clips would be."""
    name = splits.classes[label]
    held = {split: _counts(getattr(splits, split), len(splits.classes))[label] for split in ("val", "test")}
    if splits.layout == "manifest":
        listed = " and ".join(f"{n} {split}" for split, n in held.items() if n)
        return f"{root} lists {listed} clips of {name} but no train clip"
    if splits.layout == "classes":
        return f"{root / name} holds no video"
    train = root / "train"
    missing = f"{train / name} holds no video" if (train / name).is_dir() else f"{train} has no {name}/ folder"
    found = [f"{root / split / name} has {n} clip{'s' if n > 1 else ''}" for split, n in held.items() if n]
    return " but ".join([" and ".join(found), missing]) if found else missing


def _its(items: Sequence[str]) -> str:
    return "its" if len(items) == 1 else "their"


def _listed(items: Sequence[str], sep: str = ", ") -> str:
    shown = sep.join(items[:LISTED])
    return shown + (f"{sep}… ({len(items) - LISTED} more)" if len(items) > LISTED else "")
