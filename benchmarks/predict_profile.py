"""Where predict's time goes on this machine, per clip.  (run by hand, never in CI)

Each step of predicting a batch of files, timed alone and one at a time (ms per clip): decoding here,
through the watchdog child with the frames pickled back (what DataLoader workers did) or written into
shared memory (what `feed.py` does), collate, the DataLoader's hand-over of a batch from a worker,
the preprocessing and the forward pass, and the output record. Then the model's forward pass while
decoding processes run beside it (how much two kinds of work on the same cores cost each other), and
the whole of predict both ways, through a DataLoader (before issue 31) and in lanes (`lanes.py`), in
the same run so that other load on the machine slows both alike. The model's rows come twice: with
glibc's allocator as it comes and clips channels-last (before), then as predict runs it, with freed
memory kept (`lanes.keep_freed_memory`) and frame planes first (`feed.py`).

    python benchmarks/predict_profile.py [--files 192]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import pickle
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from rich.console import Console
from rich.table import Table

from vidclf.data import video
from vidclf.data.datasets import Clip, ClipDataset, clip_loader, collate, default_workers
from vidclf.data.decoder import Decoder
from vidclf.data.files import Sample
from vidclf.data.shared import SharedArena
from vidclf.checkpoint import Classifier
from vidclf.evaluate import iter_logits
from vidclf.lanes import in_lanes, keep_freed_memory
from vidclf.models import build_model
from vidclf.predict import predict_files, topk_record
from vidclf.preprocess import Preprocess, channels_first, in_channels, to_model_input
from vidclf.synth import write_dataset

BATCH = 16


def per_clip(fn: Callable[[], object], clips: int, repeat: int = 3) -> float:
    """ms per clip of `fn` (which handles `clips` clips), the best of `repeat` runs."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best / clips * 1e3


class ReadyClips(torch.utils.data.Dataset):
    """The same decoded clip for every key: a DataLoader's hand-over without the decoding."""

    def __init__(self, clip: Clip, n: int):
        self.clip, self.n = clip, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Clip:
        return self.clip._replace(index=index)


def _busy_decoding(paths: list[str], pre: Preprocess, seconds: float) -> None:
    """A process that decodes clips for `seconds`, as a DataLoader worker beside the model did."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for path in paths:
            video.load_clip(path, num_frames=pre.num_frames, size=pre.size)


def forward_in_lanes(model: torch.nn.Module, x: torch.Tensor, lengths: torch.Tensor, lanes: int, batches: int) -> None:
    """`batches` forward passes shared by `lanes` lanes of one intra-op thread each."""
    jobs = iter(range(batches))

    @torch.inference_mode()
    def run(_: int) -> None:
        model(x, lengths)

    for _ in in_lanes(lanes, lambda: next(jobs, None), lambda _: contextlib.nullcontext(run), threads=1):
        pass


def through_dataloader(paths: list[str], model: torch.nn.Module, pre: Preprocess, workers: int) -> int:
    """predict as it was before issue 31: a DataLoader's workers (each driving a decoding child) feeding
    the model with torch's own threads, then one JSON line per video; returns the records written."""
    dataset = ClipDataset([Sample(p, 0) for p in paths], pre, threads=1)
    loader = clip_loader(dataset, batch_size=BATCH, workers=workers, device=torch.device("cpu"), pad_to=pre.num_frames)
    n = 0
    for batch, logits in iter_logits(model, loader, pre, torch.device("cpu")):
        for i, probs in zip(batch.indices.tolist(), logits.softmax(dim=1)):
            json.dumps(topk_record(paths[i], probs, [str(c) for c in range(6)], 5))
            n += 1
    return n


def in_lanes_now(paths: list[str], model: torch.nn.Module, pre: Preprocess, workers: int) -> int:
    """predict now (`predict_files`), one JSON line per video; returns the records written."""
    clf = Classifier(model, [str(c) for c in range(6)], pre, Path("random-weights"))
    return sum(1 for r in predict_files(paths, clf, device=torch.device("cpu"), workers=workers) if json.dumps(r))


@torch.inference_mode()
def model_rows(model: torch.nn.Module, pre: Preprocess, clips: torch.Tensor, lengths: torch.Tensor, cores: int,
               paths: list[str], how: str) -> list[tuple[str, str]]:
    """Preprocessing and forward pass at every core's thread and at one, the forward pass in lanes, and both
    ways beside as many processes decoding (what the model suffers when decoding runs beside it)."""
    rows = []
    x = to_model_input(channels_first(clips), lengths, pre)
    batches = len(paths) // BATCH
    clips_per_run = batches * BATCH
    for threads in sorted({cores, 1}, reverse=True):
        torch.set_num_threads(threads)
        model(x, lengths)
        rows.append((f"preprocess (uint8 → input), {threads} threads, {how}",
                     f"{per_clip(lambda: [to_model_input(channels_first(clips), lengths, pre) for _ in range(batches)], clips_per_run):.2f}"))
        rows.append((f"model forward, {threads} threads, {how}",
                     f"{per_clip(lambda: [model(x, lengths) for _ in range(batches)], clips_per_run):.2f}"))
    torch.set_num_threads(cores)
    lanes = f"model forward in {cores} lanes of 1 thread (wall time), {how}"
    rows.append((lanes, f"{per_clip(lambda: forward_in_lanes(model, x, lengths, cores, batches), clips_per_run):.2f}"))
    with multiprocessing.get_context("spawn").Pool(cores) as pool:
        busy = pool.starmap_async(_busy_decoding, [(paths[i::cores], pre, 10.0) for i in range(cores)])
        time.sleep(3.0)  # the pool's imports
        beside = f"  the same beside {cores} processes decoding"
        rows.append((f"model forward, {cores} threads: " + beside,
                     f"{per_clip(lambda: [model(x, lengths) for _ in range(batches)], clips_per_run, repeat=1):.2f}"))
        rows.append((f"model forward in {cores} lanes: " + beside,
                     f"{per_clip(lambda: forward_in_lanes(model, x, lengths, cores, batches), clips_per_run, repeat=1):.2f}"))
        busy.wait()
    return rows


def _whole(label: str, run: Callable, paths: list[str], model: torch.nn.Module, pre: Preprocess,
           cores: int) -> tuple[str, str]:
    start = time.perf_counter()
    done = run(paths, model, pre, cores)
    return f"whole predict, {label}", f"{(time.perf_counter() - start) / done * 1e3:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=192)
    parser.add_argument("--arch", default="cnn-lstm")
    args = parser.parse_args()
    pre = Preprocess(num_frames=16, size=64)
    cores = default_workers()
    model = build_model(args.arch, 6, in_channels=in_channels(pre.input)).eval()
    kw = dict(num_frames=pre.num_frames, size=pre.size, sampling=pre.sampling, stride=pre.frame_stride, threads=1)
    rows: list[tuple[str, str]] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        paths = [str(p) for p in write_dataset(Path(tmp) / "d", clips_per_class=args.files // 6, frames=48,
                                                      size=128, seed=0)]
        n = len(paths)
        frames, length = video.load_clip(paths[0], **kw)
        rows.append(("decode here (load_clip, 1 thread)", f"{per_clip(lambda: [video.load_clip(p, **kw) for p in paths], n):.2f}"))
        piped = Decoder()
        piped.call(video.load_clip, paths[0], **kw)  # the child's start is not counted
        rows.append(("decode in the watchdog child, pickled back", f"{per_clip(lambda: [piped.call(video.load_clip, p, **kw) for p in paths], n):.2f}"))
        piped.close()
        arena = SharedArena(frames.nbytes)
        shared = Decoder(shared=arena)
        into = arena.array(frames.shape, 0)
        shared.call(video.load_clip, paths[0], into=into, **kw)
        rows.append(("decode in the watchdog child, into shared memory", f"{per_clip(lambda: [shared.call(video.load_clip, p, into=into, **kw) for p in paths], n):.2f}"))
        slots = SharedArena(BATCH * frames.nbytes)
        ahead = Decoder(shared=slots)
        places = [slots.array(frames.shape, i * frames.nbytes) for i in range(BATCH)]

        def prefetched() -> None:
            for start in range(0, n - BATCH + 1, BATCH):
                for p, place in zip(paths[start : start + BATCH], places):
                    ahead.prefetch(video.load_clip, p, into=place, **kw)
                for p, place in zip(paths[start : start + BATCH], places):
                    ahead.call(video.load_clip, p, into=place, **kw)

        ahead.call(video.load_clip, paths[0], into=places[0], **kw)
        rows.append((f"  the same, the next {BATCH} files sent ahead (prefetch)", f"{per_clip(prefetched, n // BATCH * BATCH):.2f}"))
        shared.close()
        ahead.close()
        blob = pickle.dumps((frames, length), protocol=pickle.HIGHEST_PROTOCOL)
        rows.append((f"  of which pickle + unpickle of {len(blob) / 1e3:.0f} kB", f"{per_clip(lambda: [pickle.loads(pickle.dumps((frames, length), -1)) for _ in range(n)], n):.2f}"))
        clips = [Clip(frames, length, 0, i) for i in range(BATCH)]
        rows.append(("collate (a fresh padded copy)", f"{per_clip(lambda: [collate(clips, pad_to=pre.num_frames) for _ in range(n // BATCH)], n // BATCH * BATCH):.2f}"))
        ready = clip_loader(ReadyClips(clips[0], n), batch_size=BATCH, workers=1, device=torch.device("cpu"),
                            pad_to=pre.num_frames)
        next(iter(ready))  # the worker's start is not counted
        rows.append(("DataLoader hand-over from a worker (incl. its collate)", f"{per_clip(lambda: [None for _ in ready], n):.2f}"))
        batch = collate(clips, pad_to=pre.num_frames)
        probs = torch.rand(BATCH, 6).softmax(dim=1)
        rows.append(("output record (top-k, JSON line)", f"{per_clip(lambda: [json.dumps(topk_record(paths[0], p, [str(c) for c in range(6)], 5)) for p in probs], BATCH):.3f}"))
        rows += model_rows(model, pre, batch.clips, batch.lengths, cores, paths, "glibc's defaults, clips channels-last")
        rows.append(_whole("through a DataLoader, its workers each driving a child (before)", through_dataloader,
                           paths, model, pre, cores))
        keep_freed_memory()
        planes = batch.clips.permute(0, 1, 4, 2, 3).contiguous().permute(0, 1, 3, 4, 2)  # as feed.py lays them out
        rows += model_rows(model, pre, planes, batch.lengths, cores, paths, "freed memory kept, frame planes first")
        rows.append(_whole(f"in {cores} lanes, each decoding into shared memory, then its model (now)", in_lanes_now,
                           paths, model, pre, cores))
    load_after = os.getloadavg()
    table = Table(title=f"{args.arch}, {n} files of 48 frames at 128², 16 frames → 64² ({pre.input}), batch {BATCH}, "
                        f"{cores} cores; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    table.add_column("step")
    table.add_column("ms per clip")
    for row in rows:
        table.add_row(*row)
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
