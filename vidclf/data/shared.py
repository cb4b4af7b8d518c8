"""Memory that decoding children write frames into and this process reads, so that a clip crosses
between processes as one copy into place instead of a pickle through a pipe (0.2 MB for 16 frames
at 64², 0.8 MB with four views), unpickled and then copied again into a batch.

The memory is an unnamed file (on tmpfs where there is one): nothing is left behind when a process
dies, and a child reaches it only through the descriptor it inherits (`decoder.py`).
"""

from __future__ import annotations

import math
import mmap
import os
import tempfile

import numpy as np


class SharedArena:
    """`nbytes` of memory shared with decoding children, handed out as numpy arrays at byte offsets."""

    def __init__(self, nbytes: int):
        if nbytes <= 0:
            raise ValueError(f"a shared arena needs a positive size, got {nbytes}")
        self._file = _reserved_file(nbytes)
        self.nbytes = nbytes
        self._bytes = np.frombuffer(mmap.mmap(self._file.fileno(), nbytes), dtype=np.uint8)

    @property
    def fd(self) -> int:
        """The descriptor a child maps (it must inherit it: `subprocess.Popen(pass_fds=…)`)."""
        return self._file.fileno()

    def array(self, shape: tuple[int, ...], offset: int, dtype: np.dtype | str = np.uint8) -> np.ndarray:
        """An array of `shape` over the arena's bytes from `offset`."""
        dtype = np.dtype(dtype)
        end = offset + math.prod(shape) * dtype.itemsize
        if offset < 0 or end > self.nbytes:
            raise ValueError(f"bytes {offset}–{end} are outside the shared arena of {self.nbytes}")
        return self._bytes[offset:end].view(dtype).reshape(shape)

    def place(self, array: np.ndarray) -> tuple[int, tuple[int, ...]]:
        """(where its first element lies in the arena, its strides): what a child needs to rebuild an array
        handed out by `array`, or a slice or transposed view of one."""
        offset = array.__array_interface__["data"][0] - self._bytes.__array_interface__["data"][0]
        span = sum((n - 1) * step for n, step in zip(array.shape, array.strides)) + array.itemsize if array.size else 0
        if any(step < 0 for step in array.strides) or offset < 0 or offset + span > self.nbytes:
            raise ValueError("the array is not a part of this shared arena")
        return offset, array.strides

    def close(self) -> None:
        """Close the descriptor; the mapping lives on while arrays over it do."""
        self._file.close()


def map_arena(fd: int, nbytes: int) -> mmap.mmap:
    """A child's view of the arena whose descriptor it inherited."""
    return mmap.mmap(fd, nbytes)


def _reserved_file(nbytes: int):
    """An unnamed file of `nbytes` with its blocks reserved: on tmpfs when there is room, else in the
    temporary folder. Reserving first turns a full tmpfs (Docker's 64 MB /dev/shm) into this fallback,
    not into a SIGBUS in whichever process first writes past the room."""
    if os.path.isdir("/dev/shm"):
        try:
            return _reserve(tempfile.TemporaryFile(dir="/dev/shm"), nbytes)
        except OSError:
            pass  # no room there
    return _reserve(tempfile.TemporaryFile(), nbytes)


def _reserve(file, nbytes: int):
    try:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(file.fileno(), 0, nbytes)
        else:  # macOS: the blocks come when first written
            os.ftruncate(file.fileno(), nbytes)
    except OSError:
        file.close()
        raise
    return file
