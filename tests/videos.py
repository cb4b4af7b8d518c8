"""Helpers that write small test videos, including ones whose frames carry their own index."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

BITS = 8  # frames 0–255 can be told apart


def indexed_frames(n: int, size: tuple[int, int] = (48, 64)) -> np.ndarray:
    """uint8 (n, H, W, 3): frame i shows i in binary as 8 wide black/white bars, robust to compression."""
    h, w = size
    frames = np.zeros((n, h, w, 3), np.uint8)
    bar = w // BITS
    for i in range(n):
        for b in range(BITS):
            if (i >> b) & 1:
                frames[i, :, b * bar : (b + 1) * bar] = 255
    return frames


def decode_index(frame: np.ndarray) -> int:
    bar = frame.shape[1] // BITS
    return sum(1 << b for b in range(BITS) if frame[:, b * bar + bar // 4 : (b + 1) * bar - bar // 4].mean() > 127)


def write_video(path: str | Path, frames: np.ndarray, *, fps: float = 25, fourcc: str = "mp4v",
                is_color: bool = True) -> Path:
    path = Path(path)
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h), is_color)
    if not writer.isOpened():
        import pytest

        pytest.skip(f"this OpenCV build cannot write {fourcc} video")
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR) if is_color else frame[..., 0])
    writer.release()
    return path
