"""Which frames a clip takes from a video: index arithmetic only, no decoding.

Training draws a random clip, evaluation and prediction take the centre clip at the same stride (or
frames spread evenly, for old checkpoints), long videos are cut into windows.
"""

from __future__ import annotations

import random


SAMPLINGS = ("center", "random", "uniform")  # centre clip, random clip (training), spread over the video


def uniform_indices(total: int, num: int) -> list[int]:
    """`num` frames spread over the whole video (the centre of each of `num` equal segments).

    A video shorter than `num` gives all its frames; the caller pads.
    """
    if num < 1:
        raise ValueError(f"num should be at least 1, got {num}")
    if total <= num:
        return list(range(max(total, 0)))
    return [(2 * i + 1) * total // (2 * num) for i in range(num)]  # int((i + 0.5) * total / num), exactly


def clip_indices(total: int, num: int, *, stride: int, rng: random.Random | None = None) -> list[int]:
    """`num` frames `stride` apart: from a random start with `rng` (training), else the centre clip.

    Evaluation takes the centre clip rather than frames spread over the whole video, so that the
    model sees motion at the frame rate it was trained on (spreading 16 frames over a 10 s video
    would show it 15× faster motion than its random training clips did).
    A video too short for the stride gets the largest stride that fits, down to 1; one shorter than
    `num` gives all its frames and the caller pads.
    """
    if num < 1 or stride < 1:
        raise ValueError(f"num and stride should be at least 1, got num={num}, stride={stride}")
    if total <= num:
        return list(range(max(total, 0)))
    if num > 1:
        stride = min(stride, (total - 1) // (num - 1))
    span = (num - 1) * stride + 1
    start = rng.randrange(total - span + 1) if rng is not None else (total - span) // 2
    return list(range(start, start + span, stride))


def spread_clips(total: int, num: int, *, stride: int, clips: int) -> list[list[int]]:
    """`clips` clips of `num` frames `stride` apart, their starts spread evenly from the video's first
    frame to the last start that fits (the views of multi-view testing); one clip is the centre clip.

    Each clip has the centre clip's stride and span, so every view shows motion at the training speed.
    """
    if clips < 1:
        raise ValueError(f"--clips should be at least 1, got {clips}")
    centre = clip_indices(total, num, stride=stride)
    if clips == 1 or total <= num:
        return [centre] * clips
    step = centre[1] - centre[0] if len(centre) > 1 else 1
    span = centre[-1] - centre[0] + 1
    starts = [i * (total - span) // (clips - 1) for i in range(clips)]
    return [list(range(start, start + span, step)) for start in starts]


def crop_offsets(length: int, size: int, crops: int) -> list[int]:
    """Where `crops` crops of `size` start along a side of `length`: the centre, or start, centre and end."""
    if crops not in (1, 3):
        raise ValueError(f"--crops should be 1 or 3, got {crops}")
    centre = (length - size) // 2
    return [centre] if crops == 1 else [0, centre, length - size]


def sample_indices(total: int, num: int, *, sampling: str, stride: int = 1,
                   rng: random.Random | None = None) -> list[int]:
    """The frames one clip takes from a video of `total` frames, by `sampling` (see SAMPLINGS)."""
    if sampling == "uniform":
        return uniform_indices(total, num)
    return clip_indices(total, num, stride=stride, rng=rng if sampling == "random" else None)


def window_bounds(total: int, *, window: int, stride: int) -> list[tuple[int, int]]:
    """[start, end) of windows of `window` frames every `stride` frames.

    If the strides leave a tail, one more full-length window ends at the last frame, so every window
    spans the same time (as in training) and the end of the video is covered. A video shorter than
    one window is one window over all of it.
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride should be at least 1, got window={window}, stride={stride}")
    if total <= window:
        return [(0, max(total, 0))]
    bounds = [(s, s + window) for s in range(0, total - window + 1, stride)]
    if bounds[-1][1] < total:
        bounds.append((total - window, total))
    return bounds
