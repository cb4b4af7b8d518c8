"""The decode cache: resized uint8 frames on disk, so epochs after the first decode no video.

Raw .npy, by measurement (benchmarks/cache.py, RESULTS.md): lossless, so a cache hit gives exactly
the pixels a decode does (JPEG moved them 1.5–2.5 levels, which would change predictions), and a
memory-mapped draw of 16 frames costs 0.5 ms where PNG frames cost 5 ms for half the disk.

Bounded: past `max_bytes` the least recently used entries go (a hit refreshes an entry's mtime).
Shared safely: entries are written to a temporary file and renamed, so ranks and workers that share
a folder never read half an entry. A full disk or an unwritable folder turns the cache off for the
process that met it, with one warning, and training goes on.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_SIZE = "20GB"
UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
         "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
EVICT_TO = 0.9  # evict down to this fraction of the bound, so a full cache is not scanned on every write
STALE_TMP = 3600  # seconds: a temporary file this old was left by a killed writer


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


class ClipCache:
    """Entries keyed by the file's identity (path, size, mtime) and the sampling settings.

    A changed file gets a new key; an unreadable entry is decoded again and replaced. `warning`
    holds the reason once the cache has turned itself off.
    """

    def __init__(self, folder: str | Path, max_bytes: int):
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.warning: str | None = None
        self._used: int | None = None  # bytes on disk as this process last counted them, plus its writes

    def usable(self) -> bool:
        """Make the folder and try a write; False (with `warning` set) where that fails."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.folder):
                pass
        except OSError as err:
            self._turn_off(err)
        return self.warning is None

    def _entry(self, path: str, settings: str) -> Path:
        st = os.stat(path)
        key = f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{settings}"
        digest = hashlib.sha1(key.encode()).hexdigest()
        return self.folder / digest[:2] / f"{digest}.npy"

    def get(self, path: str, settings: str, *, mmap: bool = False) -> np.ndarray | None:
        """The entry's frames, or None; `mmap` maps the file so that a draw reads only its own frames."""
        entry = self._entry(path, settings)
        try:
            frames = np.load(entry, mmap_mode="r" if mmap else None, allow_pickle=False)
            os.utime(entry)  # recently used: the last to be evicted
        except (OSError, ValueError, EOFError):
            return None  # missing, corrupt, or evicted meanwhile: the caller decodes and puts it back
        return frames if frames.ndim == 4 and frames.dtype == np.uint8 and len(frames) else None

    def put(self, path: str, settings: str, frames: np.ndarray) -> None:
        if self.warning is not None:
            return
        entry = self._entry(path, settings)
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=f".{entry.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    np.save(f, frames)
                os.replace(tmp, entry)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as err:  # a full disk, a read-only or vanished folder: cache off, training on
            self._turn_off(err)
            return
        if self._used is None:
            self._used = self.size()
        else:
            self._used += entry.stat().st_size
        if self._used > self.max_bytes:
            self._used = self._evict()

    def _turn_off(self, err: OSError) -> None:
        self.warning = f"decode cache off: {self.folder}: {err.strerror or err}"

    def _entries(self) -> list[os.DirEntry]:
        found = []
        for sub in os.scandir(self.folder) if self.folder.is_dir() else ():
            if sub.is_dir():
                found += [e for e in os.scandir(sub.path) if e.is_file()]
        return found

    def size(self) -> int:
        """Bytes of the entries on disk now."""
        return sum(_stat_size(e) for e in self._entries() if e.name.endswith(".npy"))

    def _evict(self) -> int:
        """Remove least recently used entries down to EVICT_TO of the bound; the bytes left."""
        entries, now = [], time.time()
        for e in self._entries():
            try:
                st = e.stat()
            except FileNotFoundError:
                continue  # another process removed it
            if e.name.endswith(".tmp") and now - st.st_mtime > STALE_TMP:
                Path(e.path).unlink(missing_ok=True)
            elif e.name.endswith(".npy"):
                entries.append((st.st_mtime, st.st_size, e.path))
        entries.sort()
        used = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if used <= self.max_bytes * EVICT_TO:
                break
            Path(path).unlink(missing_ok=True)
            used -= size
        return used


def _stat_size(entry: os.DirEntry) -> int:
    try:
        return entry.stat().st_size
    except FileNotFoundError:
        return 0
