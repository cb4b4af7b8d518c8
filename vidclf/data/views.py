"""Multi-view testing's decoding: the centre clip and clips spread over a video, whole or in three
crops, all from one sequential pass over the file (`video.py`'s reader).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vidclf.data import video
from vidclf.data.sampling import clip_indices, crop_offsets, spread_clips


def load_views(path: str | Path, *, num_frames: int, size: int, stride: int = 1, clips: int = 1, crops: int = 1,
               threads: int = 1) -> tuple[np.ndarray, int]:
    """The views of multi-view testing, from one pass over the file: (uint8 (V, num_frames, size, size, 3), length).

    View 0 is the centre clip exactly as `load_clip` gives it (what clip accuracy scores). Unless
    clips and crops are both 1, views 1… are `clips` clips spread over the video (`spread_clips`),
    each as the whole frame resized as in training (`crops` 1) or as three crops along the longer
    side of the frame resized to a shorter side of `size` (`crops` 3). Short views are padded by
    repeating their last frame; `length` says how many frames are real.
    """
    def both(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return video.to_rgb(frame, size), video.to_rgb(frame, _short_side(frame.shape[:2], size)) if crops > 1 else None

    plans = _view_plans(video.probe(path).frames, num_frames, stride, clips, crops)
    got, real_total = video.read_available(path, [i for plan in plans for i in plan], size, threads, both)
    if real_total and any(i not in got for plan in plans for i in plan):  # the container promised more
        plans = _view_plans(real_total, num_frames, stride, clips, crops)
        got, _ = video.read_available(path, [i for plan in plans for i in plan], size, threads, both)
    if not got:
        raise video.no_frame_error(path, None)
    length = min(sum(i in got for i in plan) for plan in plans)
    views = [np.stack([got[i][0] for i in plans[0] if i in got][:length])]
    for plan in plans[1::crops]:  # each spread clip once
        frames = [got[i] for i in plan if i in got][:length]
        if crops == 1:
            views.append(np.stack([squash for squash, _ in frames]))
            continue
        short = np.stack([s for _, s in frames])  # (L, h, w, 3), the shorter side = size
        long_axis = 1 if short.shape[1] > short.shape[2] else 2
        for offset in crop_offsets(short.shape[long_axis], size, crops):
            views.append(short[:, offset : offset + size] if long_axis == 1 else short[:, :, offset : offset + size])
    padded = [np.concatenate([v, np.repeat(v[-1:], num_frames - length, axis=0)]) for v in views]
    return np.stack(padded), length


def view_count(clips: int, crops: int) -> int:
    """How many views `load_views` gives: the centre clip, then each spread clip whole or in three crops."""
    return 1 if (clips, crops) == (1, 1) else 1 + clips * crops


def _view_plans(total: int, num_frames: int, stride: int, clips: int, crops: int) -> list[list[int]]:
    """Frame indices per view: the centre clip, then each spread clip (repeated per crop, for the caller)."""
    centre = clip_indices(total, num_frames, stride=stride)
    if clips == 1 and crops == 1:
        return [centre]
    spread = spread_clips(total, num_frames, stride=stride, clips=clips)
    return [centre] + [plan for plan in spread for _ in range(crops)]


def _short_side(shape: tuple[int, int], size: int) -> tuple[int, int]:
    """(height, width) with the shorter side `size` and the aspect ratio kept."""
    h, w = shape
    return (size, max(size, round(w * size / h))) if h <= w else (max(size, round(h * size / w)), size)
