"""Helpers that write small test videos, including ones whose frames carry their own index.

`indexed_frames` draws frame i's number as wide black/white bars that survive lossy codecs, and
`decode_index` reads it back, so a test can check that a decoder returned exactly the frames asked for.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np

from vidclf.data.video import silence_opencv

silence_opencv()  # before the first writer: FFmpeg's encoder chatter stays off the test output
import cv2  # noqa: E402

BITS = 10  # frames 0–1023 can be told apart


def indexed_frames(n: int, size: tuple[int, int] = (64, 64)) -> np.ndarray:
    """uint8 (n, H, W, 3) RGB: frame i shows i in binary as BITS wide black/white bars, lowest bit left."""
    h, w = size
    if n > 2**BITS or w < 4 * BITS:
        raise ValueError(f"at most {2 ** BITS} frames at least {4 * BITS} pixels wide, got n={n}, size={size}")
    frames = np.zeros((n, h, w, 3), np.uint8)
    bar = w // BITS
    for i in range(n):
        for b in range(BITS):
            if (i >> b) & 1:
                frames[i, :, b * bar : (b + 1) * bar] = 255
    return frames


def decode_index(frame: np.ndarray) -> int:
    """The number `indexed_frames` drew, read from the middle of each bar (edges blur when compressed)."""
    bar = frame.shape[1] // BITS
    inner = slice(bar // 4, bar - bar // 4) if bar >= 4 else slice(0, bar)
    return sum(1 << b for b in range(BITS) if frame[:, b * bar :][:, inner].mean() > 127)


def write_video(path: str | Path, frames: np.ndarray, *, fps: float = 25, fourcc: str = "mp4v",
                is_color: bool = True) -> Path:
    """Write uint8 (T, H, W, 3) RGB frames with OpenCV; skips the calling test if this build can't encode `fourcc`."""
    path = Path(path)
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h), is_color)
    if not writer.isOpened():
        import pytest

        pytest.skip(f"this OpenCV build cannot write {fourcc} video to {path.suffix}")
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR) if is_color else frame[..., 0])
    writer.release()
    return path


def write_video_ffmpeg(path: str | Path, frames: np.ndarray, *, fps: float = 25, args: tuple[str, ...] = ()) -> Path:
    """Encode RGB frames with the `ffmpeg` binary (e.g. H.264 with B-frames); skips the test without one."""
    import pytest

    if shutil.which("ffmpeg") is None:
        pytest.skip("no ffmpeg binary on PATH")
    path = Path(path)
    t, h, w = frames.shape[:3]
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps),
           "-i", "-", *args, str(path)]
    done = subprocess.run(cmd, input=np.ascontiguousarray(frames).tobytes(), capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"ffmpeg could not write {path.name}: {done.stderr.decode(errors='replace').strip()[-200:]}")
    return path


def tag_rotation(path: str | Path, clockwise: int) -> Path:
    """Mark an MP4 as stored sideways, as phones do: players turn it `clockwise` degrees (90, 180, 270).

    Writes the display matrix of the first track header ('tkhd', version 0) in place.
    """
    one, w = 0x10000, 0x40000000  # 16.16 and 2.30 fixed point
    matrix = {90: (0, one, 0, -one, 0, 0, 0, 0, w), 180: (-one, 0, 0, 0, -one, 0, 0, 0, w),
              270: (0, -one, 0, one, 0, 0, 0, 0, w)}[clockwise]
    path = Path(path)
    data = bytearray(path.read_bytes())
    at = data.index(b"tkhd") + 4 + 40  # version, flags, times, track id, duration, layer, volume: 40 bytes
    data[at : at + 36] = struct.pack(">9i", *matrix)
    path.write_bytes(bytes(data))
    return path
