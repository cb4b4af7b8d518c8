"""Streaming speed: the ring buffer against rerunning the whole window every hop.  (run by hand, never in CI)

A synthetic stream of random 112² frames is fed from memory (decoding is not measured) to
`stream_records` with a hop of one frame, batch 1. The baseline classifies each window from
scratch, as offline prediction would: the window's frames → `to_model_input` → model. Per-frame
work is once per frame for the ring buffer (plus, with rgb+diff input, the window's first frame
again with a zero difference), `num_frames` frames per hop for the rerun. Latency is the time from a
frame's arrival to its record; "keeps up" says whether frames/s (one record per frame) is at least
25, the frame rate of most video. The first window (all frames at once) is warm-up and not counted.
The two methods take turns frame by frame, so that other load on the machine slows both alike.

    python benchmarks/stream.py [--threads 2] [--hops 40] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from vidclf.checkpoint import Classifier
from vidclf.models import build_model
from vidclf.preprocess import Preprocess, in_channels, to_model_input
from vidclf.stream import stream_records

MODELS = [("cnn-lstm small", "cnn-lstm", {"backbone": "small"}),
          ("cnn-lstm resnet18", "cnn-lstm", {"backbone": "resnet18"}),
          ("convgru", "convgru", {})]


def synthetic(n: int, size: int, fps: float = 25.0) -> list[tuple[float, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [(i / fps, rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for i in range(n)]


@torch.inference_mode()
def classify(clf: Classifier, window: np.ndarray, device: torch.device) -> torch.Tensor:
    """Probabilities of one window, uint8 (T, H, W, 3), from scratch: as offline prediction does it."""
    pre = clf.preprocess
    clip = torch.from_numpy(window).permute(0, 3, 1, 2)[None].to(device)  # (1, T, 3, H, W)
    x = to_model_input(clip, torch.tensor([pre.num_frames], device=device), pre)
    return clf.model(x).softmax(dim=1).cpu()


def rerun(clf: Classifier, frames: list[tuple[float, np.ndarray]], device: torch.device) -> Iterator[torch.Tensor]:
    """The baseline: each hop, the whole window ending at the newest frame."""
    pre = clf.preprocess
    span = (pre.num_frames - 1) * pre.frame_stride + 1
    for n in range(span - 1, len(frames)):
        yield classify(clf, np.stack([f for _, f in frames[n - span + 1 : n + 1 : pre.frame_stride]]), device)


def hop_times(methods: dict[str, Iterator], hops: int, warmup: int) -> dict[str, list[float]]:
    """Seconds each `next(records)` took (a frame in, its record out), the methods taking turns hop by
    hop so that a busy machine slows both alike; the first `warmup` hops are left out."""
    times: dict[str, list[float]] = {method: [] for method in methods}
    for _ in range(warmup + hops):
        for method, records in methods.items():
            start = time.perf_counter()
            next(records)
            times[method].append(time.perf_counter() - start)
    return {method: t[warmup:] for method, t in times.items()}


def gflop_per_hop(records: Iterator) -> float:
    """The work of one more hop (convolutions and matrix products), which no other load changes."""
    with FlopCounterMode(display=False) as counter:
        next(records)
    return counter.get_total_flops() / 1e9


def summary(times: list[float]) -> tuple[float, float, float]:
    """(frames/s, median ms, p95 ms) at one record per frame."""
    p95 = statistics.quantiles(times, n=20)[-1]
    return len(times) / sum(times), 1e3 * statistics.median(times), 1e3 * p95


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--frames", type=int, default=16, help="frames per window (num_frames)")
    parser.add_argument("--input", default="rgb+diff", help="rgb, diff or rgb+diff (the default of training)")
    parser.add_argument("--hops", type=int, default=40, help="records timed per model and method")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    pre = Preprocess(num_frames=args.frames, size=args.size, input=args.input)
    frames = synthetic(args.frames + args.hops + 2, args.size)
    rows = []
    for label, name, options in MODELS:
        torch.manual_seed(0)
        model = build_model(name, 10, in_channels=in_channels(args.input), **options).to(device).eval()
        clf = Classifier(model, [str(i) for i in range(10)], pre, Path("random-weights"))
        methods = {"ring buffer": stream_records(clf, frames, device=device, hop_frames=1),
                   "rerun window": rerun(clf, frames, device)}
        # the ring buffer's first record is its first window, all frames at once: skip it and one more
        times = hop_times(methods, args.hops, warmup=2)
        work = {method: gflop_per_hop(records) for method, records in methods.items()}
        rows.append((label, summary(times["ring buffer"]), summary(times["rerun window"]),
                     work["ring buffer"], work["rerun window"]))

    print(f"{args.device}, {args.threads} threads, {args.size}² frames, {args.frames}-frame window, "
          f"input {args.input}, hop 1 frame, batch 1, {args.hops} hops each; load average "
          f"{os.getloadavg()[0]:.1f} at the end")
    print("| model | GFLOP/hop ring / rerun | ring frames/s | ring median ms | ring p95 ms | rerun frames/s | "
          "rerun median ms | rerun p95 ms | speed-up (median) | ring keeps up with 25 fps | rerun keeps up |")
    print("|---" * 11 + "|")
    for label, ring, full, ring_work, full_work in rows:
        print(f"| {label} | {ring_work:.2f} / {full_work:.2f} | {ring[0]:.1f} | {ring[1]:.1f} | {ring[2]:.1f} | "
              f"{full[0]:.1f} | {full[1]:.1f} | {full[2]:.1f} | {full[1] / ring[1]:.1f}× | "
              f"{'yes' if ring[0] >= 25 else 'no'} | {'yes' if full[0] >= 25 else 'no'} |")


if __name__ == "__main__":
    main()
