"""Everything OpenCV: probing videos, choosing frame indices, and decoding just the frames asked for.

Decoding is sequential: `grab()` every frame (it has to be decoded anyway) and `retrieve()` — the
colour conversion — only the sampled ones, resizing each at once; seeking only across long gaps.
Frame i is the i-th frame the decoder returns; the container's frame count is only a hint.
"""

from __future__ import annotations

import ctypes
import functools
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import numpy as np

from vidclf.data.diagnose import why_unopenable
from vidclf.errors import VidclfError
from vidclf.data.sampling import SAMPLINGS, sample_indices, window_bounds

# A seek costs up to a keyframe interval of decoding (250 frames for x264's default; OpenCV also
# lands 16 frames early and decodes forward), so it pays only across gaps much longer than that.
SEEK_GAP = 300

NO_FRAME = "no frame could be decoded (no frames, or damaged or truncated)"
Size = int | tuple[int, int] | None  # int -> (size, size); tuple -> (height, width); None -> as decoded


def silence_opencv() -> None:
    """Keep OpenCV's and FFmpeg's own messages off the terminal: a damaged file becomes one `VideoError`.

    FFmpeg reads OPENCV_FFMPEG_LOGLEVEL when OpenCV first opens a video, so the variables are set
    before that; if a video was opened already, the level is also set in the loaded libavutil.
    Values a user exported (to debug a file) are kept.
    """
    os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    import cv2

    if os.environ["OPENCV_LOG_LEVEL"].upper() == "SILENT":
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:  # Linux: the libavutil that OpenCV loaded, found in this process's memory map
        with open("/proc/self/maps") as maps:
            libs = {line.split()[-1] for line in maps if "libavutil" in line}
        for lib in libs:
            ctypes.CDLL(lib).av_log_set_level(int(os.environ["OPENCV_FFMPEG_LOGLEVEL"]))
    except (OSError, ValueError, AttributeError):
        pass  # best effort: the environment variables alone cover a fresh process


silence_opencv()
import cv2  # noqa: E402  (after the log settings above)


class VideoError(VidclfError):
    """A video that cannot be read; the message names the file and the reason, on one line."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason

    def __reduce__(self):  # rebuilt from (path, reason) when it crosses a process boundary
        return VideoError, (self.path, self.reason)


def _no_op() -> None:
    pass


# Called after every decoded frame. The decoding child process (decoder.py) sets it to send its
# heartbeat; elsewhere it does nothing.
on_frame = _no_op


@dataclass(frozen=True)
class VideoInfo:
    path: str
    frames: int  # the container's count unless counted (probe(exact=True)); decoding may find fewer
    fps: float  # 0.0 when the container does not say
    width: int  # of upright frames (rotation metadata applied)
    height: int
    duration: float  # seconds: frames / fps, 0.0 without fps


def _open(path: str | Path, threads: int = 1) -> cv2.VideoCapture:
    p = Path(path)
    if not p.exists():
        raise VideoError(path, "no such file")
    if p.is_dir():
        raise VideoError(path, "is a directory, not a video file")
    if p.stat().st_size == 0:
        raise VideoError(path, "empty file")
    if not os.access(p, os.R_OK):
        raise VideoError(path, "permission denied")
    params = [cv2.CAP_PROP_N_THREADS, threads] if threads > 0 else []  # 0: OpenCV's default threading
    try:
        cap = cv2.VideoCapture(str(p), cv2.CAP_FFMPEG, params)
    except cv2.error as err:
        raise VideoError(path, f"cannot be opened ({_last_line(err)})") from None
    if not cap.isOpened():
        raise VideoError(path, why_unopenable(p))
    if hasattr(cv2, "CAP_PROP_ORIENTATION_AUTO"):
        cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)  # rotation metadata: frames come out upright
    return cap


def _last_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return lines[-1].strip() if lines else type(err).__name__


def probe(path: str | Path, *, exact: bool = False) -> VideoInfo:
    """Size, frame rate and frame count; the count is decoded (slow) when missing or `exact`."""
    cap = _open(path)
    try:
        frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if exact or frames <= 0:
            frames = 0
            while cap.grab():
                frames += 1
                on_frame()
    except cv2.error as err:
        raise VideoError(path, f"decoding failed ({_last_line(err)})") from None
    finally:
        cap.release()
    if frames <= 0 or width <= 0 or height <= 0:  # no size: the decoder could not even parse a frame
        raise VideoError(path, NO_FRAME)
    return VideoInfo(str(path), frames, fps, width, height, frames / fps if fps > 0 else 0.0)


def resize(frame: np.ndarray, size: Size) -> np.ndarray:
    """A decoded frame at `size`, still in OpenCV's BGR (grey frames become BGR too)."""
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else size
        if frame.shape[:2] != (h, w):
            frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR)  # 10x INTER_AREA's speed
    if frame.ndim == 2 or frame.shape[2] == 1:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    return frame


def to_rgb(frame: np.ndarray, size: Size) -> np.ndarray:
    """Resize first (less to convert), then BGR -> RGB."""
    return cv2.cvtColor(resize(frame, size), cv2.COLOR_BGR2RGB)


def _check_size(size: Size) -> None:
    sides = (size,) if isinstance(size, int) else size or ()
    if size is not None and (len(sides) not in (1, 2) or any(int(s) < 1 for s in sides)):
        raise ValueError(f"size should be a positive int or (height, width), got {size!r}")


class _Reader:
    """One pass through a video in frame order: grab() up to each wanted frame, seek across long gaps.

    A seek is trusted only if OpenCV reports landing on the frame asked for; otherwise the file is
    reopened and read sequentially from the start, without seeking again. OpenCV numbers frames
    after a seek from timestamps, which matches the decode order for constant-frame-rate files.
    """

    def __init__(self, path: str | Path, threads: int):
        self.path, self.threads = path, threads
        self.seek_gap: float = SEEK_GAP  # read at call time, so tests can lower it
        self.cap = _open(path, threads)
        self.pos = 0  # the frame the next grab() decodes
        self.ended = False  # True once grab() failed: `pos` is then the real number of frames

    def read(self, index: int) -> np.ndarray | None:
        """Frame `index` (>= pos) as decoded (BGR), or None if the video ends before it."""
        if self.ended:
            return None
        if index - self.pos > self.seek_gap:
            self._seek(index)
        while self.pos <= index:
            if not self.cap.grab():
                self.ended = True
                return None
            self.pos += 1
            on_frame()
        ok, frame = self.cap.retrieve()
        return frame if ok and frame is not None else None

    def _seek(self, index: int) -> None:
        if self.cap.set(cv2.CAP_PROP_POS_FRAMES, index) and int(self.cap.get(cv2.CAP_PROP_POS_FRAMES)) == index:
            self.pos = index
            return
        self.cap.release()  # where the decoder is now is unknown: start again, sequentially
        self.cap = _open(self.path, self.threads)
        self.pos, self.seek_gap = 0, float("inf")

    def close(self) -> None:
        self.cap.release()


def read_available(path: str | Path, indices: Sequence[int], size: Size, threads: int,
          convert: Callable[[np.ndarray], Any] | None = None) -> tuple[dict[int, Any], int | None]:
    """The frames at `indices` that exist, by index, and the real frame count if decoding ended early.

    Each frame is resized to `size` as RGB, or passed as decoded (BGR) to `convert` when given.
    """
    wanted = sorted(set(int(i) for i in indices))
    if not wanted:
        raise ValueError("read_frames needs at least one index")
    if wanted[0] < 0:
        raise ValueError(f"frame indices should be >= 0, got {wanted[0]}")
    _check_size(size)
    convert = convert or functools.partial(to_rgb, size=size)
    reader = _Reader(path, threads)
    got: dict[int, Any] = {}
    try:
        for index in wanted:
            frame = reader.read(index)
            if frame is None:
                break
            got[index] = convert(frame)
    except cv2.error as err:
        raise VideoError(path, f"decoding failed ({_last_line(err)})") from None
    finally:
        reader.close()
    return got, reader.pos if reader.ended else None


def no_frame_error(path: str | Path, real_total: int | None) -> VideoError:
    if real_total:
        return VideoError(path, f"none of the frames asked for exist (decoding found {real_total})")
    return VideoError(path, NO_FRAME)


def read_frames(path: str | Path, indices: Sequence[int], *, size: Size = None, threads: int = 1) -> np.ndarray:
    """uint8 (T, H, W, 3) RGB frames at `indices` (any order, repeats allowed), frame-exact.

    Indices past the real end (the container's count is only a hint) are dropped, so the result can
    be shorter than asked; no frame at all is a `VideoError`. `size`: int -> (size, size), tuple ->
    (height, width), resized with INTER_LINEAR. `threads=1` suits DataLoader workers; 0 lets OpenCV
    thread the decoder for one large video.
    """
    got, real_total = read_available(path, indices, size, threads)
    if not got:
        raise no_frame_error(path, real_total)
    return np.stack([got[int(i)] for i in indices if int(i) in got])


def load_clip(path: str | Path, *, num_frames: int, size: Size, sampling: str = "center", stride: int = 1,
              rng: random.Random | None = None, threads: int = 1) -> tuple[np.ndarray, int]:
    """Probe, sample and decode one clip: (frames uint8 (num_frames, H, W, 3) RGB, true length).

    A short video is padded by repeating its last frame; the length says how many frames are real.
    If the file holds fewer frames than its container says, the clip is sampled again from the
    frames that exist (one more decode, only for such files) rather than padded from a few.
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling should be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    rng = (rng or random.Random()) if sampling == "random" else None
    indices = sample_indices(probe(path).frames, num_frames, sampling=sampling, stride=stride, rng=rng)
    got, real_total = read_available(path, indices, size, threads)
    if real_total and len(got) < min(num_frames, real_total):
        indices = sample_indices(real_total, num_frames, sampling=sampling, stride=stride, rng=rng)
        got, _ = read_available(path, indices, size, threads)
    if not got:
        raise no_frame_error(path, None)
    frames = [got[i] for i in indices if i in got]
    length = len(frames)
    frames += [frames[-1]] * (num_frames - length)
    return np.stack(frames), length


class Window(NamedTuple):
    start: int  # first frame of the window
    end: int  # one past its last frame
    frames: np.ndarray  # uint8 (num_frames, H, W, 3) RGB, padded by repeating the last frame
    length: int  # real frames in `frames`


def iter_windows(path: str | Path, *, window: int, stride: int, num_frames: int, size: Size,
                 sampling: str = "center", frame_stride: int = 1, threads: int = 0) -> Iterator[Window]:
    """Sliding windows over a long video, each sampled inside it as a whole video would be.

    The video is read once, in order; only frames some window samples are converted, and only those
    of windows still open are held, so memory is bounded by a window's frames, not the video's.
    Each window is yielded as soon as its last sampled frame is read. If decoding ends before the
    container's count, the remaining windows are cut at the real end (those left empty are dropped).
    """
    _check_size(size)
    total = probe(path).frames
    bounds = window_bounds(total, window=window, stride=stride)
    if sampling not in ("center", "uniform"):
        raise ValueError(f"window sampling should be 'center' or 'uniform', got {sampling!r}")
    plans = [[s + i for i in sample_indices(e - s, num_frames, sampling=sampling, stride=frame_stride)]
             for s, e in bounds]
    needed = sorted({i for plan in plans for i in plan})
    reader = _Reader(path, threads)
    held: dict[int, np.ndarray] = {}  # resized RGB frames of windows not yet yielded
    done = yielded = 0  # windows finished; windows yielded
    try:
        for index in needed:
            frame = reader.read(index)
            if frame is None:
                break
            held[index] = to_rgb(frame, size)
            while done < len(plans) and plans[done][-1] <= index:
                yield _window(bounds[done], plans[done], held, num_frames, reader)
                done += 1
                yielded += 1
                first_open = plans[done][0] if done < len(plans) else index + 1
                held = {i: f for i, f in held.items() if i >= first_open}
        for bound, plan in zip(bounds[done:], plans[done:]):  # decoding ended early
            if any(i in held for i in plan):
                yield _window(bound, plan, held, num_frames, reader)
                yielded += 1
    except cv2.error as err:
        raise VideoError(path, f"decoding failed ({_last_line(err)})") from None
    finally:
        reader.close()
    if not yielded:
        raise VideoError(path, NO_FRAME)


def _window(bound: tuple[int, int], plan: list[int], held: dict[int, np.ndarray], num_frames: int,
            reader: _Reader) -> Window:
    frames = [held[i] for i in plan if i in held]
    length = len(frames)
    frames += [frames[-1]] * (num_frames - length)
    start, end = bound
    if reader.ended:
        end = min(end, reader.pos)
    return Window(start, end, np.stack(frames), length)
