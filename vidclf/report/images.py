"""A report's pictures of one clip, written with Pillow (which matplotlib brings): a filmstrip, and a
looping animation for `--animate`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

FILMSTRIP_QUALITY = 92  # JPEG: a few levels from the frames; PNG of real footage is 5-10x larger


def save_filmstrip(frames: np.ndarray, path: Path) -> Path:
    """uint8 (L, H, W, 3) → one JPEG of the L frames left to right, at the size the model read them.

    No gaps and no scaling, so that frame i is the pixels at columns i·W … (i+1)·W; the page spaces and
    enlarges them. Full colour resolution (no chroma subsampling): small frames keep their colour edges.
    """
    from PIL import Image

    L, H, W, C = frames.shape  # frames, height, width, channels
    strip = np.ascontiguousarray(frames.transpose(1, 0, 2, 3)).reshape(H, L * W, C)  # (H, L·W, 3)
    Image.fromarray(strip).save(path, format="JPEG", quality=FILMSTRIP_QUALITY, subsampling=0)
    return path


def animation_suffix() -> str:
    """Animated WebP where Pillow was built with it (smaller, full colour), else GIF."""
    from PIL import features

    return ".webp" if features.check("webp") else ".gif"


def save_animation(frames: np.ndarray, path: Path, *, frame_ms: int) -> Path:
    """uint8 (L, H, W, 3) → a looping animation, `frame_ms` per frame (the clip's own pace)."""
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    extra = {"quality": 90} if path.suffix == ".webp" else {}
    images[0].save(path, save_all=True, append_images=images[1:], duration=max(20, frame_ms), loop=0, **extra)
    return path
