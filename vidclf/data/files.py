"""Finding labelled videos on disk: class folders, train/val/test folders or a CSV manifest, and the
seeded, stratified split of what has no val/ folder. Nothing here decodes a video.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

from vidclf.errors import DatasetError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts")
SPLIT_NAMES = ("train", "val", "test")


class Sample(NamedTuple):
    path: str
    label: int


@dataclass
class Splits:
    classes: list[str]
    train: list[Sample] = field(default_factory=list)
    val: list[Sample] = field(default_factory=list)
    test: list[Sample] = field(default_factory=list)
    layout: str = "classes"  # classes (ROOT/<class>), splits (ROOT/train|val|test/<class>) or manifest (a CSV)


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


def _read_manifest(path: Path) -> tuple[list[tuple[str, str, str | None]], bool]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise DatasetError(f"{path}: a manifest needs a header with columns path,label[,split]")
        rows = []
        for line, row in enumerate(reader, start=2):
            if not row["path"] or not row["label"]:
                raise DatasetError(f"{path}:{line}: empty path or label")
            video = Path(row["path"])
            video = video if video.is_absolute() else path.parent / video
            rows.append((str(video), row["label"], row.get("split") or None))
    return rows, "split" in reader.fieldnames


def scan(root: str | Path, *, val_split: float = 0.2, seed: int = 0) -> Splits:
    """Read any of the three layouts into train/val/test lists; classes are sorted names.

    - ROOT/<class>/*.mp4: `val_split` of each class becomes validation (stratified, seeded);
    - ROOT/train|val|test/<class>/…: the folders decide (val taken from train when there is no val/);
    - a CSV manifest `path,label[,split]`, paths relative to the CSV.
    """
    root = Path(root)
    if root.is_file() and root.suffix.lower() == ".csv":
        rows, has_split = _read_manifest(root)
        classes = sorted({label for _, label, _ in rows})
        splits = Splits(classes, layout="manifest")
        if has_split:
            for video, label, split in rows:
                if split not in SPLIT_NAMES:
                    raise DatasetError(f"{root}: split should be one of {', '.join(SPLIT_NAMES)}, got {split!r}")
                getattr(splits, split).append(Sample(video, classes.index(label)))
        else:
            samples = [Sample(v, classes.index(label)) for v, label, _ in rows]
            splits.train, splits.val = stratified_split(samples, val_split, seed)
        return splits
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
