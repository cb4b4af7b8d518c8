"""The decode cache: every frame of a video at the training size, as JPEG, in one file per video.

JPEG (quality 95), by measurement (benchmarks/cache.py, benchmarks/loader.py, RESULTS.md): a quarter
of raw uint8's bytes or less, so a UCF101-size set at 112² fits the default bound, and a 16-frame draw
decodes in about a millisecond. It moves pixels by a few levels; models trained on cached frames
and on frames decoded from the videos reach the same accuracy (RESULTS.md), and `predict`, which
decodes the video, agrees with them. One file per video: a header, the frames' offsets, the frames.
A draw reads and decodes only its own frames (the file format: entry.py).

The bound is never a reason to decode more than `--no-cache` would. The entries of the dataset being
served (`keep`) and every entry used since this cache was opened are the run's working set: it never
evicts them to make room for each other, because under random order that only trades one miss for
another. Entries of other datasets (or of older formats) go, least recently used first. When the
bound is reached with none of those left, the cache stops taking entries, and a video it does not
hold is decoded as one clip, as without a cache. So the share of the set that fits is served from
disk and the rest costs what it always did.

Shared safely: entries are written to a temporary file and renamed, so ranks, workers and `vidclf
cache` processes on a shared folder never read half an entry, and all of them reserve room from one
count under a lock (`reserve`). An entry records its video's size and modification time; one whose
video changed is decoded again. A full disk or an unwritable folder turns the cache off for the
process that met it, with one warning, and training goes on.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import struct
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from vidclf.data.entry import MAX_FRAMES, QUALITY, read_entry

DEFAULT_SIZE = "20GB"
UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
         "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
EVICT_TO = 0.9  # evict down to this fraction of the bound, so a full cache is not scanned on every write
STALE_TMP = 3600  # seconds: a temporary file this old was left by a killed writer
EXT = ".jpgs"  # an entry; older formats (.npy) are never read, and make room like other datasets' entries
JPEG_SHARE = 0.25  # until this process has written entries, a frame is guessed at this share of raw uint8
JPEG_HEADER = 1000  # plus this many bytes (JPEG's own headers dominate tiny frames)
ENTRY_NAME = re.compile(r"[0-9a-f]{40}(\.jpgs|\.npy|\..*\.tmp)")


def parse_size(text: str) -> int:
    """'500MB', '20GB', '1.5TiB', '0' → bytes (decimal units, and binary ones with an i)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = match and match.group(2).upper()
    if not match or unit not in UNITS:
        raise ValueError(f"--cache-size should be a size like 500MB or 20GB, got {text!r}")
    return int(float(match.group(1)) * UNITS[unit])


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vidclf" / "clips"


def settings_key(size: int, interpolation: str) -> str:
    """What an entry's frames depend on besides the video: the frame size, how it was resized, and the
    decoder that read them (another OpenCV/FFmpeg build may decode other pixels; checkpoints record
    this process's build, so their frames must come from it)."""
    from vidclf.data.provenance import decoder_build

    return "|".join([str(size), interpolation, *(f"{k}={v}" for k, v in sorted(decoder_build().items()))])


class ClipCache:
    """Entries named by the video's path and the settings; see the module docstring for the policy.

    `keep`: entry names (`name()`) of the dataset being served. `warning` holds the reason once the
    cache has turned itself off; `full` is set once the bound is reached with nothing left to evict.
    Copies in worker processes share `opened`, so entries any of them used are all protected.
    """

    def __init__(self, folder: str | Path, max_bytes: int, *, keep: Iterable[str] = ()):
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.keep = frozenset(keep)
        self.opened = time.time() - 0.02  # entries read or written since belong to this run (file times are coarse)
        self.warning: str | None = None
        self.full = False
        self._reserved = 0  # bytes reserved for the entry being written
        self._recounted = False  # whether this process counted the folder itself
        self._written = [0, 0]  # bytes and frames this process wrote: the guess for the next entry

    def usable(self) -> bool:
        """Make the folder and try a write; False (with `warning` set) where that fails."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.folder):
                pass
        except OSError as err:
            self.turn_off(err)
            return False
        return True

    def accepting(self) -> bool:
        return self.warning is None and not self.full

    @staticmethod
    def name(path: str, settings: str) -> str:
        """An entry's file name: from the path alone, so a dataset's names cost no I/O to list."""
        return hashlib.sha1(f"{os.path.abspath(path)}|{settings}|{QUALITY}".encode()).hexdigest() + EXT

    def entry(self, path: str, settings: str) -> Path:
        name = self.name(path, settings)
        return self.folder / name[:2] / name

    def read(self, path: str, settings: str, choose: Callable[[int], Sequence[int]]) -> np.ndarray | None:
        """uint8 (T, H, W, 3) RGB: the frames `choose(frame count)` picks, or None without a valid entry.

        Stats the video (OSError if it is gone): an entry of an older version of the file is stale.
        """
        st = os.stat(path)
        entry = self.entry(path, settings)
        try:
            with open(entry, "rb") as f:
                frames = read_entry(f, (st.st_size, st.st_mtime_ns), choose)
        except (OSError, struct.error, ValueError, OverflowError, MemoryError):
            return None  # missing, corrupt, or evicted meanwhile: the caller decodes and puts it back
        if frames is not None:
            with contextlib.suppress(OSError):
                os.utime(entry)  # recently used: the last to be evicted by another dataset
        return frames

    def reserve(self, entry: Path, frames: int, size: int) -> Path | None:
        """Room for a new entry of `frames` frames of size×size, evicting other datasets' entries for it
        if need be: the temporary file to write it to (holding the room), or None, from then on, once
        nothing is left to evict.

        Every process writing to the folder (workers, ranks, `vidclf cache` shards) reserves from one
        count on disk, under a lock, so that together they stay within the bound. A reservation is the
        entry's temporary file, made as large as the entry is guessed to be: a count of the folder sees
        entries being written elsewhere, and one whose writer was killed until it is cleared as stale.
        """
        if not self.accepting() or frames > MAX_FRAMES:
            return None
        written_bytes, written_frames = self._written
        per_frame = written_bytes / written_frames if written_frames else size * size * 3 * JPEG_SHARE + JPEG_HEADER
        guess = int(frames * per_frame)
        try:
            with self._locked():
                used = self._read_used()
                if used is None or (used + guess > self.max_bytes and not self._recounted):
                    used = self.size()  # the count was missing, or may be off (a writer killed mid-entry)
                    self._recounted = True
                if used + guess > self.max_bytes:
                    used -= self._evict(used + guess - self.max_bytes * EVICT_TO)
                self.full = used + guess > self.max_bytes
                if self.full:
                    self._write_used(used)
                    return None
                entry.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=f".{entry.name}.", suffix=".tmp")
                os.ftruncate(fd, guess)  # sparse: it counts, and takes no blocks
                os.close(fd)
                self._write_used(used + guess)
        except OSError as err:  # the folder went away or turned read-only: cache off, training on
            self.turn_off(err)
            return None
        self._reserved = guess
        return Path(tmp)

    def release(self, tmp: Path) -> None:
        """Give back the room of an entry that was not written."""
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        self._adjust(-self._reserved)
        self._reserved = 0

    def added(self, entry: Path, frames: int, replaced: int) -> None:
        """Turn the reservation of an entry a decoding process just wrote (over `replaced` bytes of a
        stale one) into its real size; an entry that breaks the bound is removed (the caller decodes a clip)."""
        try:
            size = entry.stat().st_size
        except OSError:
            size = 0
        self._written = [self._written[0] + size, self._written[1] + frames]
        if self._adjust(size - replaced - self._reserved) > self.max_bytes:
            with contextlib.suppress(OSError):
                entry.unlink()
                self._adjust(-size)
            self.full = True
        self._reserved = 0

    def _adjust(self, delta: int) -> int:
        """Add `delta` to the count; the count after."""
        with contextlib.suppress(OSError), self._locked():
            used = self._read_used()
            used = self.size() if used is None else max(used + delta, 0)
            self._write_used(used)
            return used
        return 0

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive lock on the folder's count; none where the filesystem has no locks."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.folder / ".lock", os.O_CREAT | os.O_RDWR)
        except OSError:
            yield
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:
                pass
            yield
        finally:
            os.close(fd)  # releases the lock

    def _read_used(self) -> int | None:
        try:
            return int((self.folder / ".used").read_text())
        except (OSError, ValueError):
            return None

    def _write_used(self, used: int) -> None:
        try:
            (self.folder / ".used").write_text(str(used))
        except OSError:
            pass  # the count is a shortcut: without it, the next reservation counts the folder

    def turn_off(self, err: OSError) -> None:
        self.warning = f"decode cache off: {self.folder}: {err.strerror or err}"

    def _files(self) -> list[os.DirEntry]:
        """The cache's own files: entries, old-format entries and temporary files, nothing else."""
        found = []
        for sub in os.scandir(self.folder) if self.folder.is_dir() else ():
            if sub.is_dir() and re.fullmatch(r"[0-9a-f]{2}", sub.name):
                found += [e for e in os.scandir(sub.path) if e.is_file() and ENTRY_NAME.fullmatch(e.name.lstrip("."))]
        return found

    def size(self) -> int:
        """Bytes of the entries on disk now, and of those being written (their reservations)."""
        return sum(_stat_size(e) for e in self._files())

    def held(self) -> int:
        """How many of `keep`'s entries are on disk."""
        return sum((self.folder / name[:2] / name).exists() for name in self.keep)

    def summary(self) -> str:
        """What the cache holds of `keep`, and why not all: it is full, or (balanced epochs subsample
        large classes) some videos were not drawn yet."""
        held, videos, size = self.held(), len(self.keep), self.size()
        line = f"decode cache {self.folder}: {size / 1e9:.2f} GB of {self.max_bytes / 1e9:g} GB, {held} of this run's {videos} videos"
        if held == videos:
            return line
        if self.max_bytes - size < size / max(held, 1):  # no room for one more video like these
            return line + "; the others are decoded a clip at a time (a larger --cache-size would keep them)"
        return line + "; the others are cached when first drawn"

    def count(self) -> tuple[int, int]:
        """(entries of the current format, entries of older ones)."""
        names = [e.name for e in self._files()]
        return sum(n.endswith(EXT) for n in names), sum(n.endswith(".npy") for n in names)

    def clear(self) -> int:
        """Remove every entry and temporary file; the bytes freed."""
        (self.folder / ".used").unlink(missing_ok=True)
        freed = 0
        for e in self._files():
            freed += _stat_size(e)
            Path(e.path).unlink(missing_ok=True)
        return freed

    def _evict(self, excess: float) -> int:
        """Remove the least recently used entries outside the working set, up to `excess` bytes (to
        EVICT_TO of the bound, so that the next writes do not scan again); the bytes removed. Only
        what it removes changes the count: reservations of entries being written elsewhere stay."""
        entries, now = [], time.time()
        for e in self._files():
            try:
                st = e.stat()
            except FileNotFoundError:
                continue  # another process removed it
            if e.name.endswith(".tmp"):
                if now - st.st_mtime > STALE_TMP:
                    Path(e.path).unlink(missing_ok=True)
            elif not (e.name in self.keep or st.st_mtime >= self.opened):
                entries.append((st.st_mtime, st.st_size, e.path))
        removed = 0
        for _, size, path in sorted(entries):
            if removed >= excess:
                break
            Path(path).unlink(missing_ok=True)
            removed += size
        return removed


def _stat_size(entry: os.DirEntry) -> int:
    try:
        return entry.stat().st_size
    except FileNotFoundError:
        return 0
