"""`vidclf check`: what a dataset holds, per class, and which files cannot be read."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from vidclf.datasets import find_videos


def check_videos(paths: Sequence[str | Path], *, progress=None) -> dict:
    """Probe every video and decode its first frame; a clip's class is its parent folder's name."""
    from vidclf import video

    classes: dict[str, dict] = {}
    failed = []
    for path in find_videos(paths):
        if progress is not None:
            progress(path)
        try:
            info = video.probe(path)
            video.read_frames(path, [0])
        except video.VideoError as err:
            failed.append({"path": str(path), "error": str(err)})
            continue
        row = classes.setdefault(path.parent.name, {"class": path.parent.name, "clips": 0, "duration": 0.0,
                                                    "min_size": None, "max_size": None})
        row["clips"] += 1
        row["duration"] += info.duration
        area = info.width * info.height
        if row["min_size"] is None or area < row["min_size"][0] * row["min_size"][1]:
            row["min_size"] = [info.width, info.height]
        if row["max_size"] is None or area > row["max_size"][0] * row["max_size"][1]:
            row["max_size"] = [info.width, info.height]
    rows = [classes[name] for name in sorted(classes)]
    for row in rows:
        row["duration"] = round(row["duration"], 3)
    return {"classes": rows, "num_clips": sum(r["clips"] for r in rows), "failed": failed}
