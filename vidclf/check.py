"""`vidclf check`: what a dataset holds, per class, and which files cannot be read or are suspect.

A CSV manifest is checked as the dataset it lists: its videos, counted under the labels its cells
give them (a clip of several labels under each, and how many clips have how many labels).

Files are checked in parallel by threads, each driving its own decoding process (`decoder.py`), so
a file that stalls costs one thread `timeout` seconds and never hangs the check.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

from vidclf.data.files import find_videos, read_manifest, scan
from vidclf.data.decoder import Decoder
from vidclf.data.splits import check_splits
from vidclf.errors import DatasetError


def check_datasets(paths: Sequence[str | Path]) -> list[dict]:
    """Split findings ({level, message}) of each path that is a dataset root, as train would see it with
    its default --val-split and seed; a folder of unlabelled videos or a single file has none."""
    findings = []
    for path in paths:
        try:
            splits = scan(path)
        except DatasetError:
            continue
        findings += [finding._asdict() for finding in check_splits(splits, path)]
    return findings


def check_videos(paths: Sequence[str | Path], *, workers: int = 1, deep: bool = False,
                 decode_timeout: float | None = None, progress: Callable[[Path], None] | None = None) -> dict:
    """Probe every video and decode its first frame, or with `deep` every frame.

    A clip's class is its parent folder's name, or for a CSV manifest's videos the labels it lists. `deep`
    also lists files whose container promises more frames than decode (truncated, ending early) or fewer
    (a header that lies) under `suspect`.
    """
    labelled = labelled_videos(paths)
    files = list(labelled)
    if not files:
        raise DatasetError(f"{', '.join(map(str, paths))}: no video files found")
    local = threading.local()  # one decoder (one child process) per thread

    def check_one(path: Path) -> dict:
        if not hasattr(local, "decoder"):
            local.decoder = Decoder(decode_timeout)
        result = _check_file(path, local.decoder, deep)
        if progress is not None:
            progress(path)
        return result

    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(pool.map(check_one, files))
    return _report(results, labelled)


def labelled_videos(paths: Sequence[str | Path]) -> dict[Path, tuple[str, ...]]:
    """Every video to check with its labels: a manifest's rows (a video it lists twice, once), the files
    in folders or given by name under their parent folder's name."""
    found: dict[Path, tuple[str, ...]] = {}
    for path in map(Path, paths):
        if path.is_file() and path.suffix.lower() == ".csv":
            found.update((Path(video), labels) for video, labels, _ in read_manifest(path)[0])
        else:
            found.update((video, (video.parent.name,)) for video in find_videos([path]))
    return found


def _check_file(path: Path, decoder: Decoder, deep: bool) -> dict:
    from vidclf.data.video import VideoError, probe, read_frames

    try:
        info = decoder.call(probe, path)
        if deep:
            decoded = decoder.call(probe, path, exact=True).frames  # decodes every frame
        else:
            decoder.call(read_frames, path, [0])
            decoded = None
    except VideoError as err:
        return {"path": str(path), "error": str(err)}
    return {"path": str(path), "error": None, "info": info, "decoded": decoded}


def _suspicion(header: int, decoded: int) -> str | None:
    if decoded < header:
        return f"ends early: {decoded} of the {header} frames its header lists decode (truncated?)"
    if decoded > header:
        return f"its header lists {header} frames but {decoded} decode"
    return None


def _report(results: list[dict], labelled: dict[Path, tuple[str, ...]]) -> dict:
    classes: dict[str, dict] = {}
    failed, suspect, per_clip = [], [], Counter()
    for r in results:
        if r["error"]:
            failed.append({"path": r["path"], "error": r["error"]})
            continue
        info, path = r["info"], Path(r["path"])
        if r["decoded"] is not None and (problem := _suspicion(info.frames, r["decoded"])):
            suspect.append({"path": r["path"], "header_frames": info.frames, "decoded_frames": r["decoded"],
                            "problem": f"{path}: {problem}"})
        labels = labelled[path]
        per_clip[len(labels)] += 1
        for name in labels or (NO_LABEL,):
            _count(classes.setdefault(name, {"class": name, "clips": 0, "duration": 0.0, "min_size": None,
                                             "max_size": None}), info)
    rows = [classes[name] for name in sorted(classes)]
    for row in rows:
        row["duration"] = round(row["duration"], 3)
    return {"classes": rows, "num_clips": sum(per_clip.values()), "labels_per_clip": dict(sorted(per_clip.items())),
            "failed": failed, "suspect": suspect}


NO_LABEL = "(no label)"  # the row of a multi-label manifest's clips with an empty label cell


def _count(row: dict, info) -> None:
    """One more readable clip in a class's (or label's) row."""
    row["clips"] += 1
    row["duration"] += info.duration
    area = info.width * info.height
    if row["min_size"] is None or area < row["min_size"][0] * row["min_size"][1]:
        row["min_size"] = [info.width, info.height]
    if row["max_size"] is None or area > row["max_size"][0] * row["max_size"][1]:
        row["max_size"] = [info.width, info.height]
