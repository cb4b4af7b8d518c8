"""`vidclf cache`: fill the decode cache before training, on every core, so that GPU time is spent
training and not decoding.

Each video of the dataset (every split) goes through the path training takes (`ClipDataset` with the
cache) in parallel DataLoader processes, so an entry is decoded and written exactly as a training
miss would write it, by the decoding child, under the same watchdog. Entries already there are read,
not rewritten: a fill that was stopped continues where it was. `--shard I/N` lets several machines
fill one shared folder, each its part; the whole dataset's entries are protected from eviction by
every part, so no part pushes out another's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from vidclf.data.cache import ClipCache, settings_key
from vidclf.data.datasets import ClipDataset, clip_loader
from vidclf.data.decoder import Decoder
from vidclf.preprocess import Preprocess
from vidclf.data.files import Sample, scan, shard as take_shard


@dataclass
class FillReport:
    folder: str
    videos: int  # in this shard
    written: int  # entries written by this fill
    present: int  # entries of this shard's videos on disk at the end (written now or before)
    bytes: int  # their size
    cache_bytes: int  # the whole cache folder's entries
    max_bytes: int
    seconds: float
    failed: list[dict] = field(default_factory=list)  # {"path", "error"}
    warnings: list[str] = field(default_factory=list)  # e.g. the cache turned off: a full disk

    @property
    def not_cached(self) -> int:
        """Readable videos left out: longer than the cache holds, or past the bound."""
        return self.videos - self.present - len(self.failed)


def fill(data: str | Path, *, folder: str | Path, max_bytes: int, size: int, workers: int,
         decode_timeout: float | None, shard: str | None = None,
         progress: Callable[[int, int], None] = lambda done, total: None) -> FillReport:
    """Decode and cache every video of `data` (this shard's) at size×size; `progress(done, total)`."""
    import torch

    splits = scan(data)
    everything = sorted({s.path for s in splits.train + splits.val + splits.test})
    mine = take_shard(everything, shard)
    pre = Preprocess(num_frames=1, size=size)  # one frame read back per video: the entry is the point
    settings = settings_key(pre.size, pre.interpolation)
    cache = ClipCache(folder, max_bytes, keep=[ClipCache.name(p, settings) for p in everything])
    if not cache.usable():
        raise OSError(cache.warning)
    entries = [cache.entry(p, settings) for p in mine]
    before = sum(e.exists() for e in entries)
    dataset = ClipDataset([Sample(p, 0) for p in mine], pre, cache=cache, decoder=Decoder(decode_timeout))
    loader = clip_loader(dataset, batch_size=8, workers=workers, device=torch.device("cpu"), pad_to=1)
    start, done, failed, warnings = time.perf_counter(), 0, [], []
    for batch in loader:
        failed += [{"path": f.path, "error": f.reason} for f in batch.failures]
        done += len(batch.lengths) + len(batch.failures)
        progress(done, len(mine))
        warnings += [w for w in batch.warnings if w not in warnings]
        if warnings:  # the cache turned itself off (a full disk, say): the rest would only be decoded
            break
    sizes = [e.stat().st_size for e in entries if e.exists()]
    return FillReport(str(folder), len(mine), len(sizes) - before, len(sizes), sum(sizes), cache.size(), max_bytes,
                      time.perf_counter() - start, failed, warnings)


def coverage(data: str | Path, *, folder: str | Path, size: int) -> tuple[int, int]:
    """(videos of `data` with an entry at this size, videos of `data`): what --info says of a dataset."""
    splits = scan(data)
    paths = sorted({s.path for s in splits.train + splits.val + splits.test})
    settings = settings_key(size, Preprocess.interpolation)
    names = [ClipCache.name(p, settings) for p in paths]
    return sum((Path(folder) / name[:2] / name).exists() for name in names), len(paths)
