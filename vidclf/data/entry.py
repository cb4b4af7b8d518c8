"""A decode cache entry on disk: every frame of one video at the training size, as JPEG.

The layout: a header (magic, the video's size and mtime_ns, frame count, height, width), T + 1
uint64 offsets, then the JPEG frames back to back, so that a draw reads only its own frames' span.
`cache.py` decides which entries exist; this module only writes and reads one.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Sequence

import numpy as np

MAX_FRAMES = 512  # longer videos are not cached: each draw decodes its clip afresh
QUALITY = 95  # JPEG quality: a quarter of raw uint8's bytes or less, accuracy unchanged (RESULTS.md)
MAGIC = b"VIDCLFJ1"
HEADER = struct.Struct("<8sQqIII")  # magic, video size, video mtime_ns, frames, height, width


def read_entry(f: BinaryIO, source: tuple[int, int], choose: Callable[[int], Sequence[int]]) -> np.ndarray | None:
    """uint8 (T, H, W, 3) RGB: the frames `choose(frame count)` picks from an open entry; None if the
    entry is not one, is of another version of the video (`source`: its size and mtime_ns), or is cut
    short or corrupt. Reads only the span of the file those frames take."""
    import cv2

    head = f.read(HEADER.size)
    magic, size, mtime, count, height, width = HEADER.unpack(head)
    if magic != MAGIC or (size, mtime) != source or not 0 < count <= MAX_FRAMES:
        return None
    offsets = np.frombuffer(f.read(8 * (count + 1)), dtype="<u8").astype(np.int64)
    if len(offsets) != count + 1 or offsets[0] != 0 or (np.diff(offsets) <= 0).any() or offsets[-1] > 2**31:
        return None
    indices = list(choose(count))
    lo, hi = int(offsets[min(indices)]), int(offsets[max(indices) + 1])
    f.seek(HEADER.size + 8 * (count + 1) + lo)
    data = np.frombuffer(f.read(hi - lo), dtype=np.uint8)  # only the span the clip needs
    if len(data) != hi - lo:
        return None  # cut short
    out = np.empty((len(indices), height, width, 3), np.uint8)
    rgb = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV ≥ 4.11 decodes straight to RGB
    for row, i in enumerate(indices):
        try:
            frame = cv2.imdecode(data[offsets[i] - lo : offsets[i + 1] - lo], rgb or cv2.IMREAD_COLOR)
        except cv2.error:
            return None
        if frame is None or frame.shape != (height, width, 3):
            return None
        out[row] = frame if rgb else cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    return out


def write_entry(path: str, entry: str, tmp: str, *, frames: int, size: int, threads: int = 1) -> tuple[int, int]:
    """Decode the `frames` frames of `path` at size×size and write them as a cache entry, through its
    reservation `tmp`; (the frames written, the bytes of the stale entry it replaced).

    Runs in the decoding child (decoder.py), so that the frames never travel through a pipe: the
    caller reads the entry back, exactly as it would on a later epoch.
    """
    import cv2

    from vidclf.data import video

    st = os.stat(path)

    def encode(frame: np.ndarray) -> bytes:
        ok, data = cv2.imencode(".jpg", video.resize(frame, size), [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
        if not ok:
            raise video.VideoError(path, "a frame could not be encoded for the cache")
        return data.tobytes()

    got, _ = video.read_available(path, range(frames), size, threads, encode)
    if not got:
        raise video.no_frame_error(path, None)
    jpegs = [got[i] for i in sorted(got)]
    offsets = np.cumsum([0] + [len(b) for b in jpegs], dtype="<u8")
    try:
        replaced = os.stat(entry).st_size
    except OSError:
        replaced = 0
    write_atomic(Path(entry), Path(tmp), [HEADER.pack(MAGIC, st.st_size, st.st_mtime_ns, len(jpegs), size, size),
                                          offsets.tobytes(), *jpegs])
    return len(jpegs), replaced


def write_atomic(entry: Path, tmp: Path, chunks: Iterable[bytes]) -> None:
    """Write `tmp` (beside `entry`), then rename it: readers never see half an entry."""
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would keep a shared folder's entries from other users
        os.replace(tmp, entry)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
