"""Everything OpenCV: probing videos, choosing frame indices, and decoding just the frames asked for.

Decoding is sequential: `grab()` every frame (it has to be decoded anyway) and `retrieve()` — the
colour conversion — only the sampled ones, resizing each at once; seeking only across long gaps.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

# FFmpeg and OpenCV print warnings for damaged files straight to stderr; users get one clear line instead.
os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from vidclf.errors import VidclfError  # noqa: E402

cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
# Seeking costs a keyframe interval of decoding; it pays only across gaps much longer than that.
SEEK_GAP = 300


class VideoError(VidclfError):
    """A video that cannot be read; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


@dataclass(frozen=True)
class VideoInfo:
    path: str
    frames: int
    fps: float
    width: int
    height: int
    duration: float  # seconds


def _open(path: str | Path, threads: int = 1) -> cv2.VideoCapture:
    p = Path(path)
    if not p.exists():
        raise VideoError(path, "no such file")
    if p.is_dir():
        raise VideoError(path, "is a directory, not a video file")
    if p.stat().st_size == 0:
        raise VideoError(path, "empty file")
    params = [cv2.CAP_PROP_N_THREADS, threads] if threads > 0 else []
    cap = cv2.VideoCapture(str(p), cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        raise VideoError(path, "not a video OpenCV can open (unknown format, damaged, or no video stream)")
    cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)  # rotation metadata: frames come out upright
    return cap


def _count_frames(cap: cv2.VideoCapture) -> int:
    n = 0
    while cap.grab():
        n += 1
    return n


def probe(path: str | Path, *, exact: bool = False) -> VideoInfo:
    """Size, frame rate and frame count; the count is decoded when the container lacks it or `exact`."""
    cap = _open(path)
    try:
        frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if exact or frames <= 0:
            frames = _count_frames(cap)
    finally:
        cap.release()
    if frames <= 0 or width <= 0 or height <= 0:
        raise VideoError(path, "no video frames")
    return VideoInfo(str(path), frames, fps, width, height, frames / fps if fps > 0 else 0.0)


def uniform_indices(total: int, num: int) -> list[int]:
    """`num` frames spread over the whole video (the centre of each of `num` equal segments)."""
    if total <= num:
        return list(range(total))
    return [int((i + 0.5) * total / num) for i in range(num)]


def random_clip_indices(total: int, num: int, *, stride: int, rng: random.Random) -> list[int]:
    """`num` frames `stride` apart from a random start; a shorter video gets a smaller stride, then all frames."""
    if total <= num:
        return list(range(total))
    stride = max(1, min(stride, (total - 1) // (num - 1) if num > 1 else stride))
    span = (num - 1) * stride + 1
    start = rng.randrange(total - span + 1)
    return list(range(start, start + span, stride))


def _resize(frame: np.ndarray, size: int | tuple[int, int] | None) -> np.ndarray:
    if frame.ndim == 2 or frame.shape[2] == 1:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    else:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    if size is None:
        return frame
    h, w = (size, size) if isinstance(size, int) else size
    if frame.shape[:2] == (h, w):
        return frame
    return cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR)


def read_frames(path: str | Path, indices: Sequence[int], *, size: int | tuple[int, int] | None = None,
                threads: int = 1) -> np.ndarray:
    """uint8 (T, H, W, 3) RGB frames at `indices` (any order, repeats allowed), frame-exact.

    Frame i is the i-th decoded frame. Indices past the real end (the container's count is only a
    hint) are dropped, so the result can be shorter than asked; no frame at all is a `VideoError`.
    `threads=1` suits DataLoader workers; 0 lets OpenCV thread the decoder for one large video.
    """
    wanted = sorted(set(int(i) for i in indices))
    if not wanted:
        raise ValueError("read_frames needs at least one index")
    if wanted[0] < 0:
        raise ValueError(f"frame indices must be >= 0, got {wanted[0]}")
    cap = _open(path, threads)
    got: dict[int, np.ndarray] = {}
    try:
        pos = 0  # index of the next frame grab() decodes
        for index in wanted:
            if index - pos > SEEK_GAP and cap.set(cv2.CAP_PROP_POS_FRAMES, index):
                landed = int(cap.get(cv2.CAP_PROP_POS_FRAMES))
                if landed == index:
                    pos = index
                else:  # an inexact seek: start again from the top rather than risk the wrong frame
                    cap.release()
                    cap = _open(path, threads)
                    pos = 0
            while pos <= index and cap.grab():
                pos += 1
            if pos <= index:
                break  # the video ended early
            ok, frame = cap.retrieve()
            if not ok or frame is None:
                break
            got[index] = _resize(frame, size)
    except cv2.error as err:
        raise VideoError(path, f"decoding failed ({str(err).strip().splitlines()[-1]})") from None
    finally:
        cap.release()
    if not got:
        raise VideoError(path, "no frame could be decoded (damaged or truncated file?)")
    order = [i for i in indices if i in got]
    return np.stack([got[i] for i in order])


def load_clip(path: str | Path, *, num_frames: int, size: int | tuple[int, int] | None,
              sampling: str = "uniform", stride: int = 1, rng: random.Random | None = None,
              threads: int = 1) -> tuple[np.ndarray, int]:
    """Probe, sample and decode one clip: (frames (num_frames, H, W, 3), true length).

    A short video is padded by repeating its last frame; the length says how many frames are real.
    """
    total = probe(path).frames
    if sampling == "uniform":
        indices = uniform_indices(total, num_frames)
    elif sampling == "random":
        indices = random_clip_indices(total, num_frames, stride=stride, rng=rng or random.Random())
    else:
        raise ValueError(f"sampling should be 'uniform' or 'random', got {sampling!r}")
    frames = read_frames(path, indices, size=size, threads=threads)
    length = len(frames)
    if length < num_frames:
        frames = np.concatenate([frames, np.repeat(frames[-1:], num_frames - length, axis=0)])
    return frames, length


class Window(NamedTuple):
    start: int  # first frame of the window
    end: int  # one past its last frame
    frames: np.ndarray  # uint8 (num_frames, H, W, 3), padded by repeating the last frame
    length: int  # real frames in `frames`


def window_bounds(total: int, *, window: int, stride: int) -> list[tuple[int, int]]:
    """Windows of `window` frames every `stride` frames; one more ends at the last frame if a tail is left."""
    if total <= window:
        return [(0, total)]
    bounds = [(s, s + window) for s in range(0, total - window + 1, stride)]
    if bounds[-1][1] < total:
        bounds.append((total - window, total))
    return bounds


def iter_windows(path: str | Path, *, window: int, stride: int, num_frames: int,
                 size: int | tuple[int, int] | None, threads: int = 0) -> Iterator[Window]:
    """Sliding windows of a long video, read once, in order; only open windows' frames are held."""
    total = probe(path).frames
    bounds = window_bounds(total, window=window, stride=stride)
    plans = [[s + i for i in uniform_indices(e - s, num_frames)] for s, e in bounds]
    needed = sorted({i for plan in plans for i in plan})
    cap = _open(path, threads)
    held: dict[int, np.ndarray] = {}
    next_window = yielded = 0
    pos = 0
    try:
        for index in needed + [None]:
            if index is not None:
                while pos <= index and cap.grab():
                    pos += 1
                if pos > index:
                    ok, frame = cap.retrieve()
                    if ok and frame is not None:
                        held[index] = _resize(frame, size)
                else:
                    index = None  # the video ended early: flush what remains
            while next_window < len(plans) and (index is None or plans[next_window][-1] <= index):
                frames = [held[i] for i in plans[next_window] if i in held]
                if frames:
                    length = len(frames)
                    frames += [frames[-1]] * (num_frames - length)
                    yield Window(*bounds[next_window], np.stack(frames), length)
                    yielded += 1
                next_window += 1
                keep_from = plans[next_window][0] if next_window < len(plans) else None
                held = {i: f for i, f in held.items() if keep_from is not None and i >= keep_from}
            if index is None:
                break
    finally:
        cap.release()
    if not yielded:
        raise VideoError(path, "no frame could be decoded (damaged or truncated file?)")
