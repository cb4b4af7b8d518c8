"""Finding labelled videos on disk: class folders, train/val/test folders or a CSV manifest, and the
seeded, stratified split of what has no val/ folder. Nothing here decodes a video.

A manifest's label cells may hold several `;`-separated labels (or none): a multi-label dataset,
whose samples' labels are tuples (`labels.py`).
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

from vidclf.data.labels import label_set, multilabel_split, parse_cell
from vidclf.errors import DatasetError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts")
SPLIT_NAMES = ("train", "val", "test")


class Sample(NamedTuple):
    path: str
    label: int | tuple[int, ...]  # the class; in a multi-label dataset the sorted labels present, maybe none


@dataclass
class Splits:
    classes: list[str]
    train: list[Sample] = field(default_factory=list)
    val: list[Sample] = field(default_factory=list)
    test: list[Sample] = field(default_factory=list)
    layout: str = "classes"  # classes (ROOT/<class>), splits (ROOT/train|val|test/<class>) or manifest (a CSV)
    multi_label: bool = False  # labels are tuples: any manifest cell held several, or it was asked for


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith(".")


def find_videos(paths: Sequence[str | Path]) -> Iterator[Path]:
    """Files as given; folders searched recursively for video files, in sorted order."""
    for p in map(Path, paths):
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*") if f.is_file() and is_video(f))
        else:
            yield p


def find_classes(root: Path) -> list[str]:
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _class_folder_samples(root: Path, classes: list[str]) -> list[Sample]:
    return [
        Sample(str(f), classes.index(c))
        for c in find_classes(root)
        for f in sorted((root / c).rglob("*"))
        if f.is_file() and is_video(f)
    ]


def stratified_split(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Hold out `fraction` of every class (at least one clip of classes with two or more, never the
    last one: a class with no training clip is one the model cannot learn), seeded."""
    if not 0 <= fraction < 1:
        raise DatasetError(f"--val-split should be in [0, 1), got {fraction}")
    rng = random.Random(seed)
    train, val = [], []
    for label in sorted({s.label for s in samples}):
        group = [s for s in samples if s.label == label]
        rng.shuffle(group)
        n_val = round(len(group) * fraction)
        if fraction > 0 and n_val == 0 and len(group) >= 2:
            n_val = 1
        n_val = min(n_val, len(group) - 1)
        val += group[:n_val]
        train += group[n_val:]
    return sorted(train), sorted(val)


Row = tuple[str, tuple[str, ...], "str | None"]  # video path, its labels, its split


def read_manifest(path: Path) -> tuple[list[Row], bool]:
    """The rows of a CSV manifest `path,labels[,split]` (or `label`, as before multi-label), paths made
    relative to the CSV, and whether it has a split column."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = set(reader.fieldnames or ())
        if "path" not in columns or not columns & {"label", "labels"}:
            raise DatasetError(f"{path}: a manifest needs a header with columns path,labels[,split] "
                               "(or path,label[,split])")
        if {"label", "labels"} <= columns:
            raise DatasetError(f"{path}: give a label or a labels column, not both")
        column = "labels" if "labels" in columns else "label"
        rows = []
        for line, row in enumerate(reader, start=2):
            if not row["path"]:
                raise DatasetError(f"{path}:{line}: empty path")
            labels = parse_cell(row[column], where=f"{path}:{line}")
            video = Path(row["path"])
            video = video if video.is_absolute() else path.parent / video
            rows.append((str(video), labels, row.get("split") or None))
    return rows, "split" in columns


def _manifest_splits(root: Path, *, val_split: float, seed: int, multi_label: bool) -> Splits:
    rows, has_split = read_manifest(root)
    multi_label = multi_label or any(len(labels) > 1 for _, labels, _ in rows)
    if not multi_label and (line := next((i for i, (_, labels, _) in enumerate(rows, 2) if not labels), None)):
        raise DatasetError(f"{root}:{line}: no label (an empty cell is a clip with no label only in a multi-label "
                           "manifest: train with --multi-label)")
    classes = sorted({label for _, labels, _ in rows for label in labels})
    splits = Splits(classes, layout="manifest", multi_label=multi_label)
    samples = [Sample(video, tuple(sorted(classes.index(x) for x in labels)) if multi_label else classes.index(labels[0]))
               for video, labels, _ in rows]
    if has_split:
        for sample, (_, _, split) in zip(samples, rows):
            if split not in SPLIT_NAMES:
                raise DatasetError(f"{root}: split should be one of {', '.join(SPLIT_NAMES)}, got {split!r}")
            getattr(splits, split).append(sample)
    else:
        split = multilabel_split if multi_label else stratified_split
        splits.train, splits.val = split(samples, val_split, seed)
    return splits


def scan(root: str | Path, *, val_split: float = 0.2, seed: int = 0, multi_label: bool = False) -> Splits:
    """Read any of the three layouts into train/val/test lists; classes are sorted names.

    - ROOT/<class>/*.mp4: `val_split` of each class becomes validation (stratified, seeded);
    - ROOT/train|val|test/<class>/…: the folders decide (val taken from train when there is no val/);
    - a CSV manifest `path,labels[,split]`, paths relative to the CSV: multi-label when a cell holds
      several labels. `multi_label` makes any layout's samples label tuples (one label a clip).
    """
    root = Path(root)
    if root.is_file() and root.suffix.lower() == ".csv":
        return _manifest_splits(root, val_split=val_split, seed=seed, multi_label=multi_label)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset folder or manifest (create one with `vidclf synth {root}`)")
    if (root / "train").is_dir():
        present = [s for s in SPLIT_NAMES if (root / s).is_dir()]
        classes = sorted({c for s in present for c in find_classes(root / s)})
        splits = Splits(classes, **{s: _class_folder_samples(root / s, classes) for s in present}, layout="splits")
        if "val" not in present:
            splits.train, splits.val = stratified_split(splits.train, val_split, seed)
    else:
        classes = find_classes(root)
        samples = _class_folder_samples(root, classes)
        splits = Splits(classes)
        splits.train, splits.val = stratified_split(samples, val_split, seed)
    if not classes or not (splits.train or splits.val or splits.test):
        raise DatasetError(f"{root}: no videos found (expected {root}/<class>/<video> folders)")
    if multi_label:
        for name in SPLIT_NAMES:
            setattr(splits, name, [s._replace(label=label_set(s.label)) for s in getattr(splits, name)])
        splits.multi_label = True
    return splits


def shard(paths: list[str], spec: str | None) -> list[str]:
    """`I/N` keeps every N-th path starting at I: array jobs whose outputs concatenate to the whole."""
    if not spec:
        return paths
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise ValueError(f"--shard should be I/N with 0 <= I < N, got {spec!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard should be I/N with 0 <= I < N, got {spec!r}")
    return paths[i::n]
