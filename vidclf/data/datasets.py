"""Serving uint8 clips to a DataLoader: which clip of a video to ask for, the cached answer, bad
videos replaced in training, batches padded to one shape, and the epoch's order on each rank.

Finding the videos is `files.py`'s job, decoding them `video.py`'s.
"""

from __future__ import annotations

import atexit
import copy
import multiprocessing.process
import multiprocessing.resource_tracker
import functools
import os
import random
import weakref
from collections import Counter
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch

from vidclf.data.balance import balanced_order
from vidclf.data.cache import ClipCache, settings_key
from vidclf.data.entry import write_entry
from vidclf.data.decoder import Decoder, stop_signals_blocked
from vidclf.preprocess import Preprocess
from vidclf.data.files import Sample
from vidclf.data.sampling import sample_indices


class Failure(NamedTuple):
    path: str
    reason: str  # the VideoError's message: names the file and what is wrong
    index: int = -1  # position in the dataset


class Clip(NamedTuple):
    frames: np.ndarray  # uint8 (L, H, W, 3), or (V, L, H, W, 3) for V views (multi-view testing)
    length: int
    label: int | tuple[int, ...]  # the class, or a multi-label sample's 0/1 row (labels.with_targets)
    index: int  # the sample served: a replacement's own position when the asked-for video failed
    failures: tuple[Failure, ...] = ()  # videos tried for this key that could not be read
    warning: str | None = None  # e.g. the decode cache turned itself off in this worker


class Batch(NamedTuple):
    clips: torch.Tensor  # uint8 (B, T, H, W, 3) channels last, as decoded; zero after each clip's length
    lengths: torch.Tensor  # int64 (B,)
    labels: torch.Tensor  # int64 (B,), or multi-label 0/1 rows (B, labels)
    indices: torch.Tensor  # int64 (B,): positions in the dataset
    failures: list[Failure]  # videos of this batch that could not be read
    warnings: list[str] = []
    views: int = 1  # rows per video: B is videos × views, a video's views consecutive, view 0 its centre clip


class ClipDataset(torch.utils.data.Dataset):
    """Serves a `Clip` per key; for evaluation, a `Failure` for a video that cannot be read.

    Keys are `index` or `(index, epoch)`: random clips are drawn from a generator seeded by
    (seed, epoch, index), so any epoch can be replayed exactly (resume) in any worker.
    In training, a video that cannot be read is replaced by other samples, tried in an order seeded
    the same way, so every batch on every rank is full (DDP ranks then always step together) and
    a resumed run replays the same replacements. Only when nothing readable is left does a
    training key give a `Failure`.
    """

    def __init__(self, samples: Sequence[Sample], pre: Preprocess, *, train: bool = False, seed: int = 0,
                 cache: ClipCache | None = None, threads: int = 1, decoder: Decoder | None = None,
                 views: tuple[int, int] = (1, 1)):
        self.samples = list(samples)
        self.pre = pre
        self.train = train
        self.seed = seed
        self.cache = cache
        self.threads = threads  # decoder threads per clip: 1 in workers, 0 (OpenCV's choice) for few large files
        self.decoder = decoder or Decoder()
        self.known_bad: dict[int, Failure] = {}  # per process: a bad video is decoded once, not once a draw
        self.views = views  # (clips, crops) of multi-view testing (evaluation only): see views.load_views

    def __len__(self) -> int:
        return len(self.samples)

    def frames_shape(self) -> tuple[int, ...]:
        """The shape of a video's frames as decoded, padded to the clip's length: ([V,] T, H, W, 3)."""
        from vidclf.data.views import view_count

        pre = self.pre
        clip = (pre.num_frames, pre.size, pre.size, 3)
        return clip if self.train or self.views == (1, 1) else (view_count(*self.views), *clip)

    def with_decoder(self, decoder: Decoder) -> ClipDataset:
        """This dataset decoding through `decoder`: one for each thread that decodes for it."""
        twin = copy.copy(self)
        twin.decoder = decoder
        return twin

    def clips_into(self, indices: Sequence[int], intos: Sequence[np.ndarray]) -> list[Clip | Failure]:
        """What `dataset[index]` serves in evaluation, for each index, its frames decoded into the array beside
        it (`frames_shape()`): straight into a batch in shared memory (`feed.py`), the files sent to the
        child ahead (`Decoder.prefetch`). Without a cache: a cached dataset is served by `dataset[index]`."""
        if self.train or self.cache is not None:
            raise ValueError("clips_into serves an evaluation dataset without a cache")
        fn, kwargs = self._decoding(seed="")  # evaluation draws no random clip
        for index, into in zip(indices, intos):
            if index not in self.known_bad:
                self.decoder.prefetch(fn, self.samples[index].path, into=into, **kwargs)
        return [self._clip(index, 0, into=into) for index, into in zip(indices, intos)]

    def _decoding(self, seed: str) -> tuple[Callable, dict]:
        """The function that decodes one video's clip (or views) and its arguments; every draw starts a
        generator from `seed`, so the clip drawn does not depend on which way it is read."""
        from vidclf.data import video, views

        pre = self.pre
        if not self.train and self.views != (1, 1):
            clips, crops = self.views
            return views.load_views, dict(num_frames=pre.num_frames, size=pre.size, stride=pre.frame_stride,
                                          clips=clips, crops=crops, threads=self.threads)
        return video.load_clip, dict(num_frames=pre.num_frames, size=pre.size, sampling=self._sampling(),
                                     stride=pre.frame_stride, rng=self._rng(seed), threads=self.threads)

    def _sampling(self) -> str:
        return "random" if self.train else self.pre.sampling

    def _rng(self, seed: str) -> random.Random | None:
        return random.Random(seed) if self.train else None

    def _frames(self, path: str, seed: str, into: np.ndarray | None = None) -> np.ndarray:
        """([V,] L, H, W, 3): from the cache when it holds the video (or takes it now), else one clip decoded
        (with `into`, there)."""
        pre = self.pre
        if self.cache is not None and (self.train or self.views == (1, 1)):
            frames = self._cached(path, lambda total: sample_indices(total, pre.num_frames, sampling=self._sampling(),
                                                                     stride=pre.frame_stride, rng=self._rng(seed)))
            if frames is not None:
                return frames
        fn, kwargs = self._decoding(seed)
        frames, length = self.decoder.call(fn, path, into=into, **kwargs)
        return frames[..., :length, :, :, :]  # (…, T, H, W, 3): the real frames

    def _cached(self, path: str, choose) -> np.ndarray | None:
        """The clip `choose(frame count)` picks from the video's cache entry, written now if the cache
        takes the video; None if it does not (the caller decodes one clip)."""
        from vidclf.data import video

        settings = settings_key(self.pre.size, self.pre.interpolation)
        frames = self.cache.read(path, settings, choose)
        if frames is not None or not self.cache.accepting():
            return frames
        entry = self.cache.entry(path, settings)
        total = self.decoder.call(video.probe, path).frames
        tmp = self.cache.reserve(entry, total, self.pre.size)
        if tmp is None:
            return None
        try:
            written = self.decoder.call(write_entry, path, str(entry), str(tmp), frames=total, size=self.pre.size,
                                        threads=self.threads)
        except OSError as err:  # writing the entry failed (a full disk, say): cache off, training on
            self.cache.release(tmp)
            self.cache.turn_off(err)
            return None
        except BaseException:  # the video failed: its room goes back
            self.cache.release(tmp)
            raise
        self.cache.added(entry, *written)
        return self.cache.read(path, settings, choose)  # what a later epoch reads: cold = warm

    def _clip(self, index: int, epoch: int, draw: int = 0, into: np.ndarray | None = None) -> Clip | Failure:
        from vidclf.data.video import VideoError

        if index in self.known_bad:
            return self.known_bad[index]
        path, label = self.samples[index]
        try:
            frames = self._frames(path, f"{self.seed}|{epoch}|{index}" + (f"|{draw}" if draw else ""), into)
        except (VideoError, OSError) as err:  # OSError: gone since the scan, or its mount died (the cache stats it)
            reason = str(err) if isinstance(err, VideoError) else f"{path}: cannot be read ({err.strerror or err})"
            self.known_bad[index] = Failure(path, reason, index)
            return self.known_bad[index]
        return Clip(frames, frames.shape[-4], label, index, warning=self.cache.warning if self.cache else None)

    def _replacements(self, index: int, epoch: int) -> list[int]:
        order = [i for i in range(len(self.samples)) if i != index]
        random.Random(f"replace|{self.seed}|{epoch}|{index}").shuffle(order)
        return order

    def __getitem__(self, key: int | tuple[int, int] | tuple[int, int, int]) -> Clip | Failure:
        index, epoch, draw = (*key, 0)[:3] if isinstance(key, tuple) else (key, 0, 0)
        item = self._clip(index, epoch, draw)
        if isinstance(item, Clip) or not self.train:
            return item
        failures = [item]
        for other in self._replacements(index, epoch):
            item = self._clip(other, epoch, draw)
            if isinstance(item, Clip):
                return item._replace(failures=tuple(failures))
            failures.append(item)
        return failures[0]  # nothing readable is left: the training loop stops with that error


def default_workers() -> int:
    """DataLoader processes when none are asked for: the cores this process may use, at most 16."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(cores, 16))


def worker_init(_: int) -> None:
    import cv2

    from vidclf.data.decoder import ignore_stop_signals

    cv2.setNumThreads(1)  # one decoder thread per worker: the workers are the parallelism
    ignore_stop_signals()
    # A worker started after the parent made its multiprocessing temp folder inherits it (the Process
    # object carries the parent's config), and puts the socket it passes batches through there; at exit
    # the parent's removal of the folder raced the worker's of its socket, and one of them printed a
    # FileNotFoundError traceback. A folder of its own, removed by the worker itself, races nothing.
    multiprocessing.process.current_process()._config.pop("tempdir", None)


def clip_loader(dataset: ClipDataset, *, batch_size: int, workers: int, device: torch.device, pad_to: int,
                sampler: torch.utils.data.Sampler | None = None) -> torch.utils.data.DataLoader:
    """Batches of uint8 clips decoded in `workers` processes, pinned for the copy to a GPU.

    Workers are forked, unless this process already loaded OpenCV (a library caller, a benchmark):
    a forked child of a process whose OpenCV thread pool ran hangs in cv2.setNumThreads, so those
    workers start from a fresh forkserver process instead (a few seconds, once: they persist).
    """
    import sys

    loader = _Loader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
        collate_fn=functools.partial(collate, pad_to=pad_to),  # fixed T: the model sees one shape
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=worker_init if workers > 0 else None,
        multiprocessing_context="forkserver" if workers > 0 and "cv2" in sys.modules else None,
    )
    _LOADERS.add(loader)
    return loader


class _Loader(torch.utils.data.DataLoader):
    """Starts its workers (and the forkserver, when it starts them) with the stop signals blocked."""

    def __iter__(self):
        if self.num_workers:
            # multiprocessing's resource tracker unblocks SIGINT and SIGTERM once it has started itself,
            # which would end our block before the forkserver starts: start it first.
            multiprocessing.resource_tracker.ensure_running()
        with stop_signals_blocked():
            return super().__iter__()


# Workers ignore SIGTERM (worker_init), so they must be told to stop: multiprocessing's own exit
# hook would SIGTERM them and then wait forever. This hook, registered after it, runs before it.
_LOADERS: "weakref.WeakSet[torch.utils.data.DataLoader]" = weakref.WeakSet()


@atexit.register
def _stop_workers() -> None:
    for loader in list(_LOADERS):
        running = getattr(loader, "_iterator", None)  # persistent workers live in the loader's iterator
        if running is not None and hasattr(running, "_shutdown_workers"):
            running._shutdown_workers()


def collate(items: list[Clip | Failure], *, pad_to: int | None = None) -> Batch:
    """Pad clips with zeros to the longest (or `pad_to`, for fixed shapes) and keep the true lengths.

    One uint8 tensor for the clips, channels last as decoded: each clip is one contiguous copy, and
    the permute to channels first happens on the device (`preprocess.channels_first`).
    """
    good = [it for it in items if isinstance(it, Clip)]
    failures = [f for it in items for f in ([it] if isinstance(it, Failure) else it.failures)]
    warnings = sorted({it.warning for it in good if it.warning})
    views = good[0].frames.shape[0] if good and good[0].frames.ndim == 5 else 1
    if views > 1:  # one row per view, a video's views consecutive
        good = [it._replace(frames=view) for it in good for view in it.frames]
    if not good:
        empty = torch.zeros(0, dtype=torch.long)
        return Batch(torch.zeros(0, 0, 0, 0, 3, dtype=torch.uint8), empty, empty, empty, failures, warnings)
    T = max(pad_to or 0, max(it.length for it in good))
    _, H, W, C = good[0].frames.shape
    clips = np.zeros((len(good), T, H, W, C), dtype=np.uint8)
    for i, it in enumerate(good):
        clips[i, : it.length] = it.frames
    return Batch(
        torch.from_numpy(clips),
        torch.tensor([it.length for it in good]),
        torch.tensor([it.label for it in good]),
        torch.tensor([it.index for it in good]),
        failures,
        warnings,
        views,
    )


class EpochSampler(torch.utils.data.Sampler):
    """Yields `(index, epoch, draw)` keys in an order fixed by (seed, epoch), sharded across ranks.

    `draw` counts the times an index came before in the epoch (class-balanced epochs repeat the clips
    of small classes), so that each repeat is a different clip of the video. `skip` drops the first
    keys of this rank, so a resumed run continues mid-epoch exactly. `pad` (training) wraps around so
    that every rank takes as many steps as the others, as DistributedSampler does; without it
    (validation, evaluation) each key is served exactly once and ranks may get one fewer. With
    `labels`, every class is drawn equally often in an epoch of the same length (`balance.py`).
    """

    def __init__(self, size: int, *, shuffle: bool, seed: int = 0, rank: int = 0, world: int = 1, pad: bool = True,
                 labels: Sequence[int] | None = None):
        self.size, self.shuffle, self.seed, self.labels = size, shuffle, seed, labels
        self.rank, self.world, self.pad = rank, world, pad
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, *, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def _order(self) -> list[tuple[int, int]]:
        if self.labels is not None:
            order = balanced_order(self.labels, random.Random(f"balanced|{self.seed}|{self.epoch}"))
        else:
            order = list(range(self.size))
            if self.shuffle:
                random.Random(f"order|{self.seed}|{self.epoch}").shuffle(order)
        seen: Counter[int] = Counter()
        keys = []
        for i in order:
            keys.append((i, seen[i]))
            seen[i] += 1
        if self.world > 1 and self.pad:
            per_rank = -(-self.size // self.world)
            keys = (keys * self.world)[: per_rank * self.world]
        return keys[self.rank :: self.world]

    def __iter__(self):
        return iter([(i, self.epoch, draw) for i, draw in self._order()[self.skip :]])

    def __len__(self) -> int:
        return max(len(self._order()) - self.skip, 0)  # a run stopped after an epoch's last step skips it all
