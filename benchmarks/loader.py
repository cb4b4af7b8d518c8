"""The training data path alone, against bare references, on UCF101-like sets.  (run by hand, never in CI)

For each dataset folder, in one run, with the same number of processes everywhere (`--workers`), no
model, T frames at size² (the training loader's batches are only counted):

  bare clip decode     OpenCV, one random T-frame clip per video: grab() to it, retrieve + resize its frames
  bare whole decode    OpenCV, every frame of each video: grab + retrieve + resize (what a cache entry needs)
  bare format read     the cache's own file format read without vidclf: header, the clip's byte span,
                       T × cv2.imdecode + BGR→RGB (entries written by the cold epoch below)
  vidclf --no-cache    one epoch of vidclf's training loader (ClipDataset + clip_loader), decoding clips
  vidclf cold / warm   epochs 1 and 2 with an empty, unbounded cache
  vidclf bound 30%     epochs 1–3 with the cache bound at 30% of what the set needs (measured by the cold run)
  vidclf cache fill    `prefill.fill` (what `vidclf cache` runs) into an empty folder: videos/s

Bytes per video and per frame of the cache (against raw uint8), and the peak RSS of each phase's
process tree (the main process, its DataLoader workers and their decoding children, sampled from
/proc every 0.1 s; shared pages count once per process). Files are in the page cache after the
first phase (all read the same videos), so the figures are CPU costs, not disk costs.

    python benchmarks/loader.py /work/ucf/n200 /work/ucf/n800            # 112², T=16, 2 processes
    python benchmarks/loader.py DATA... [--size 112] [--frames 16] [--workers 2] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import shutil
import struct
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from vidclf.data.cache import ClipCache, parse_size
from vidclf.data.datasets import ClipDataset, EpochSampler, clip_loader
from vidclf.data.decoder import Decoder
from vidclf.preprocess import Preprocess
from vidclf.data.fill import fill
from vidclf.data.files import Sample, scan


class PeakRSS:
    """The largest summed RSS of this process and all its descendants while the block runs."""

    def __enter__(self):
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, sum(_rss(p) for p in _tree(os.getpid())))


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in open(f"/proc/{p}/task/{task}/children").read().split()]
        except OSError:
            pass
    return out


def _rss(pid: int) -> int:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# The bare references: plain OpenCV, no vidclf code, one decoder thread per process.

def _bare_clip(job: tuple[str, int, int, int]) -> int:
    import cv2

    path, frames, size, seed = job
    cv2.setNumThreads(1)
    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    start = random.Random(seed).randrange(max(total - frames, 0) + 1)
    got = 0
    for i in range(start + frames):
        if not cap.grab():
            break
        if i >= start:
            ok, frame = cap.retrieve()
            cv2.cvtColor(cv2.resize(frame, (size, size), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
            got += 1
    cap.release()
    return got


def _bare_whole(job: tuple[str, int, int, int]) -> int:
    import cv2

    path, _, size, _ = job
    cv2.setNumThreads(1)
    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    got = 0
    while cap.grab():
        ok, frame = cap.retrieve()
        cv2.resize(frame, (size, size), interpolation=cv2.INTER_LINEAR)
        got += 1
    cap.release()
    return got


def _bare_read(job: tuple[str, int, int, int]) -> int:
    """One random T-frame clip from an entry: 36-byte header, offsets, the clip's span, T JPEG decodes."""
    import cv2

    entry, frames, _, seed = job
    cv2.setNumThreads(1)
    with open(entry, "rb") as f:
        _, _, _, count, h, w = struct.unpack("<8sQqIII", f.read(36))
        offsets = np.frombuffer(f.read(8 * (count + 1)), dtype="<u8").astype(np.int64)
        start = random.Random(seed).randrange(max(count - frames, 0) + 1)
        stop = min(start + frames, count)
        f.seek(36 + 8 * (count + 1) + offsets[start])
        data = np.frombuffer(f.read(offsets[stop] - offsets[start]), np.uint8)
    out = np.empty((stop - start, h, w, 3), np.uint8)
    for row, i in enumerate(range(start, stop)):
        cv2.cvtColor(cv2.imdecode(data[offsets[i] - offsets[start] : offsets[i + 1] - offsets[start]],
                                  cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB, dst=out[row])
    return len(out)


def bare(fn, jobs: list, workers: int) -> tuple[float, int]:
    """(items per second, peak RSS) of `fn` over `jobs` in a pool of `workers` processes."""
    with multiprocessing.get_context("fork").Pool(workers) as pool, PeakRSS() as rss:
        pool.map(fn, jobs[: workers * 2])  # the processes' imports, not timed
        start = time.perf_counter()
        pool.map(fn, jobs, chunksize=4)
        rate = len(jobs) / (time.perf_counter() - start)
    return rate, rss.peak


def loader_epochs(samples: list[Sample], pre: Preprocess, args, cache: ClipCache | None, epochs: int) -> tuple[list[float], int]:
    """Clips per second of each epoch of vidclf's training loader; the workers start before the clock."""
    dataset = ClipDataset(samples, pre, train=True, seed=0, cache=cache, decoder=Decoder())
    sampler = EpochSampler(len(samples), shuffle=True, seed=0)
    loader = clip_loader(dataset, batch_size=args.batch_size, workers=args.workers, device=torch.device("cpu"),
                         pad_to=pre.num_frames, sampler=sampler)
    rates = []
    with PeakRSS() as rss:
        for epoch in range(epochs):
            sampler.set_epoch(epoch)
            it = iter(loader)
            start, clips = time.perf_counter(), 0
            for batch in it:
                clips += len(batch.lengths)
            rates.append(clips / (time.perf_counter() - start))
    return rates, rss.peak


def measure(root: Path, args) -> list[tuple[str, str, str, str]]:
    splits = scan(root)
    samples = sorted(splits.train + splits.val + splits.test)
    paths = [s.path for s in samples]
    pre = Preprocess(num_frames=args.frames, size=args.size)
    work = Path(tempfile.mkdtemp(prefix="vidclf-loader-"))
    rows = []

    def row(what: str, rate: float, unit: str, ratio: str, rss: int) -> None:
        rows.append((what, f"{rate:,.1f} {unit}", ratio, f"{rss / 2**20:,.0f} MiB"))
        print(f"  {what}: {rate:,.1f} {unit}  {ratio}", flush=True)

    jobs = [(p, args.frames, args.size, i) for i, p in enumerate(paths)]
    clip_rate, clip_rss = bare(_bare_clip, jobs, args.workers)
    whole_rate, whole_rss = bare(_bare_whole, jobs, args.workers)
    (no_cache,), no_cache_rss = loader_epochs(samples, pre, args, None, 1)

    full = ClipCache(work / "full", parse_size("1TB"))
    (cold, warm), cold_rss = loader_epochs(samples, pre, args, full, 2)
    need = full.size()
    entries = [str(p) for p in sorted((work / "full").rglob("*.jpgs"))]
    read_rate, read_rss = bare(_bare_read, [(e, args.frames, args.size, i) for i, e in enumerate(entries)], args.workers)
    frames = sum(struct.unpack("<8sQqIII", open(e, "rb").read(36))[3] for e in entries)

    bounded = ClipCache(work / "bounded", int(0.3 * need))
    (b1, b2, b3), bound_rss = loader_epochs(samples, pre, args, bounded, 3)
    bounded_bytes = bounded.size()

    with PeakRSS() as rss:
        report = fill(root, folder=work / "fill", max_bytes=parse_size("1TB"), size=args.size, workers=args.workers,
                      decode_timeout=60.0)
    fill_rate = report.videos / report.seconds

    row("bare clip decode (OpenCV)", clip_rate, "clips/s", "", clip_rss)
    row("bare whole-video decode (OpenCV)", whole_rate, "videos/s", "", whole_rss)
    row("bare read of the cache format", read_rate, "clips/s", "", read_rss)
    row("vidclf --no-cache", no_cache, "clips/s", f"{no_cache / clip_rate:.2f}× bare clip decode", no_cache_rss)
    row("vidclf cold epoch (cache filling)", cold, "clips/s", f"{cold / whole_rate:.2f}× bare whole decode", cold_rss)
    row("vidclf warm epoch", warm, "clips/s", f"{warm / read_rate:.2f}× bare format read, "
        f"{warm / clip_rate:.1f}× bare clip decode", cold_rss)
    row("vidclf bound 30%: epoch 1", b1, "clips/s", f"{b1 / no_cache:.2f}× --no-cache", bound_rss)
    row("vidclf bound 30%: epochs 2, 3", (b2 + b3) / 2, "clips/s",
        f"{b2 / no_cache:.2f}×, {b3 / no_cache:.2f}× --no-cache; cache {bounded_bytes / need:.0%} of need", bound_rss)
    row("vidclf cache (fill)", fill_rate, "videos/s", f"{fill_rate / whole_rate:.2f}× bare whole decode", rss.peak)
    raw = args.size * args.size * 3
    per_video, per_frame = need / len(entries), need / frames
    rows.append(("cache bytes", f"{per_video / 1e6:.2f} MB/video, {per_frame / 1e3:.1f} kB/frame",
                 f"{per_frame / raw:.1%} of raw uint8 ({raw / 1e3:.1f} kB)",
                 f"UCF101 (13,320 × 7 s × 25 fps): {13320 * 175 * per_frame / 1e9:.0f} GB"))
    print(f"  cache: {per_video / 1e6:.2f} MB/video, {per_frame / raw:.1%} of raw", flush=True)
    shutil.rmtree(work)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="+", type=Path)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for root in args.roots:
        n = len(scan(root).train) + len(scan(root).val) + len(scan(root).test)
        print(f"{root}: {n} videos, T={args.frames}, {args.size}², {args.workers} processes", flush=True)
        rows = measure(root, args)
        print(f"\n| {root} ({n} videos) | rate | ratio | peak RSS |\n|---|---|---|---|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
        print(flush=True)


if __name__ == "__main__":
    main()
