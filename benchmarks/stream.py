"""Streaming: the recurrent step and the ring buffer against rerunning the whole window every hop.  (run by hand, never in CI)

A synthetic stream of random 112² frames is fed from memory (decoding is not measured) to
`stream_records` with a hop of one frame, batch 1. The baseline classifies each window from
scratch, as offline prediction would: the window's frames → `to_model_input` → model. Per-frame
work is once per frame for the ring buffer (plus, with rgb+diff input, the window's first frame
again with a zero difference), `num_frames` frames per hop for the rerun. Latency is the time from a
frame's arrival to its record; "keeps up" says whether frames/s (one record per frame) is at least
25, the frame rate of most video. The first window (all frames at once) is warm-up and not counted.
The two methods take turns frame by frame, so that other load on the machine slows both alike.

The recurrent step (vidclf/framestep.py, what `stream` runs for a checkpoint trained --online) makes
one update per frame with the state carried: one frame's CNN or stem and one step of the recurrence.

    python benchmarks/stream.py [--threads 2] [--hops 40] [--device cpu]

With --accuracy, per-frame accuracy on the long labelled streams of `vidclf synth --task stream`
(motion changing every 2–5 s, 25 fps) for an --online checkpoint stepping, the same checkpoint on
windows, and a clip-trained checkpoint of the same architecture on windows (what `stream` did before):
over all frames that every method labels, exactly 16 frames after each change, from 16 frames after
each change to the next, the frames until the label first follows a change (median), the first and
last --edge seconds, and the wall time a frame (decoding not included):

    python benchmarks/stream.py --training --size 64 --hops 5   # a training step, --online against clips
    python benchmarks/stream.py --accuracy --online ONLINE.pt --clips CLIPS.pt --streams DIR/streams [--count 1] [--seconds 600]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from vidclf.checkpoint import Classifier, load_classifier
from vidclf.framestep import FrameStep
from vidclf.models import build_model
from vidclf.preprocess import Preprocess, in_channels, to_model_input
from vidclf.stream import frames, stream_probs, stream_records
from vidclf.timeline import follow_metrics, labels_path, read_frame_labels

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


def state_bytes(clf: Classifier, device: torch.device) -> int:
    """Bytes of a recurrent step's state (frame, flag, the model's): the same after any number of frames."""
    return sum(t.numel() * t.element_size() for t in FrameStep(clf.model, clf.preprocess).initial_state(1, device))


def speed(args: argparse.Namespace) -> None:
    """Cost per record at a hop of one frame: the recurrent step, the ring buffer and rerun windows."""
    device = torch.device(args.device)
    pre = Preprocess(num_frames=args.frames, size=args.size, input=args.input)
    frames = synthetic(args.frames + args.hops + 2, args.size)
    rows = []
    for label, name, options in MODELS:
        torch.manual_seed(0)
        model = build_model(name, 10, in_channels=in_channels(args.input), **options).to(device).eval()
        clf = Classifier(model, [str(i) for i in range(10)], pre, Path("random-weights"))
        methods = {"ring buffer": stream_records(clf, frames, device=device, hop_frames=1, stepwise=False),
                   "rerun window": rerun(clf, frames, device),
                   "step": stream_records(clf, frames, device=device, hop_frames=1, stepwise=True)}
        # the ring buffer's first record is its first window, all frames at once: skip it and one more
        times = hop_times(methods, args.hops, warmup=2)
        work = {method: gflop_per_hop(records) for method, records in methods.items()}
        rows.append((label, {m: summary(t) for m, t in times.items()}, work, state_bytes(clf, device)))

    print(f"{args.device}, {args.threads} threads, {args.size}² frames, {args.frames}-frame window, "
          f"input {args.input}, hop 1 frame, batch 1, {args.hops} hops each; load average "
          f"{os.getloadavg()[0]:.1f} at the end")
    print("| model | GFLOP/hop step / ring / rerun | step frames/s | step median ms | step p95 ms | ring frames/s | "
          "ring median ms | rerun frames/s | rerun median ms | step ÷ ring (median) | step ÷ rerun | ring ÷ rerun | "
          "step state KiB | step keeps up with 25 fps |")
    print("|---" * 14 + "|")
    for label, t, work, state in rows:
        step, ring, full = t["step"], t["ring buffer"], t["rerun window"]
        print(f"| {label} | {work['step']:.3f} / {work['ring buffer']:.2f} / {work['rerun window']:.2f} | "
              f"{step[0]:.1f} | {step[1]:.2f} | {step[2]:.2f} | {ring[0]:.1f} | {ring[1]:.1f} | {full[0]:.1f} | "
              f"{full[1]:.1f} | {step[1] / ring[1]:.2f}× | {step[1] / full[1]:.2f}× | {ring[1] / full[1]:.2f}× | "
              f"{state / 1024:.1f} | {'yes' if step[0] >= 25 else 'no'} |")


def follow(truth: np.ndarray, top: np.ndarray, *, after: int, edge: int) -> dict:
    """`timeline.follow_metrics` from frame `after` on, and the accuracy over the first and last `edge` frames."""
    right = top == truth
    return {**follow_metrics(truth, top, after=after), "first": right[after:edge].mean(), "last": right[-edge:].mean()}


def accuracy(args: argparse.Namespace) -> None:
    """Per-frame accuracy on long labelled streams (`vidclf synth --task stream`): an --online checkpoint
    stepping and on windows, and a clip-trained one on windows (today's `stream`)."""
    device = torch.device(args.device)
    online, clips = (load_classifier(path, device=device) for path in (args.online, args.clips))
    methods = {"online, one step a frame": (online, True), "online, windows": (online, False),
               "clip-trained, windows": (clips, False)}
    methods = {m: v for (m, v), short in zip(methods.items(), ("step", "online-windows", "clip-windows"))
               if short in args.methods.split(",")}
    span = (clips.preprocess.num_frames - 1) * clips.preprocess.frame_stride + 1
    totals: dict[str, list] = {m: [] for m in methods}
    for path in sorted(Path(args.streams).glob("*.mp4"))[: args.count]:
        truth = np.array([online.classes.index(label) for label in read_frame_labels(labels_path(path))])
        decoded = list(itertools.islice(frames(str(path), online.preprocess.size), round(args.seconds * 25)))
        truth = truth[: len(decoded)]
        for method, (clf, stepwise) in methods.items():
            top, start = np.full(len(decoded), -1), time.perf_counter()
            reset = args.reset if stepwise else None
            for index, (_, probs) in enumerate(stream_probs(clf, decoded, device=device, hop_frames=1, stepwise=stepwise,
                                                            reset_s=reset), start=0 if stepwise else span - 1):
                top[index] = int(probs.argmax())
            seconds = (time.perf_counter() - start) / len(decoded)
            totals[method].append({**follow(truth, top, after=span - 1, edge=round(args.edge * 25)), "ms": 1e3 * seconds})
            print(f"{path.name} {method}: {totals[method][-1]}", flush=True)
    print(f"{args.device}, {args.threads} threads, {args.count} streams of {args.seconds:g} s, reset every {args.reset} s, "
          f"{online.preprocess.size}² frames, motion changes every 2–5 s; load average {os.getloadavg()[0]:.1f} at the end")
    print(f"| method | all frames | 16 frames after a change | from 16 after a change on | frames until it follows "
          f"(median) | first {args.edge:g} s | last {args.edge:g} s | ms a frame |")
    print("|---" * 8 + "|")
    for method, rows in totals.items():
        mean = {k: np.mean([r[k] for r in rows]) for k in rows[0] if k != "path"}
        print(f"| {method} | {mean['accuracy']:.3f} | {mean['after_change']:.3f} | {mean['settled']:.3f} | {mean['follow_frames']:.1f} | "
              f"{mean['first']:.3f} | {mean['last']:.3f} | {mean['ms']:.2f} |")


def training_cost(args: argparse.Namespace) -> None:
    """Seconds a training step takes on the same 16 clips: as clips (one label each, from a zero state),
    and --online (2 sequences of 8 clips, a label per frame, truncated backpropagation in chunks of 16
    frames with the state carried), the two taking turns so that other load slows both alike."""
    import torch.nn.functional as F

    from vidclf.online import backward_sequences, join_clips

    device = torch.device(args.device)
    pre = Preprocess(num_frames=args.frames, size=args.size, input=args.input)
    gen = torch.Generator().manual_seed(0)
    clips = torch.randint(0, 256, (16, args.frames, args.size, args.size, 3), generator=gen).to(torch.uint8).to(device)
    lengths, labels = torch.full((16,), args.frames, device=device), torch.arange(16, device=device) % 10
    print(f"{args.device}, {args.threads} threads, {args.size}² frames, 16 clips of {args.frames} frames a step, "
          f"input {args.input}, {args.hops} steps each")
    print("| model | clips: s a step | --online: s a step | --online ÷ clips |")
    print("|---|---|---|---|")
    for label, name, options in MODELS:
        torch.manual_seed(0)
        model = build_model(name, 10, in_channels=in_channels(args.input), **options).to(device).train()

        def as_clips() -> None:
            x = to_model_input(clips.permute(0, 1, 4, 2, 3), lengths, pre, generator=gen)
            F.cross_entropy(model(x, lengths), labels).backward()

        def online() -> None:
            seqs = join_clips(clips, lengths, labels, pre, per_sequence=8, generator=gen)
            backward_sequences(model, seqs, chunk=16, backward=lambda loss: loss.backward(), device=device)

        times = hop_times({"clips": _repeat(as_clips), "online": _repeat(online)}, args.hops, warmup=1)
        clip_s, online_s = statistics.median(times["clips"]), statistics.median(times["online"])
        print(f"| {label} | {clip_s:.3f} | {online_s:.3f} | {online_s / clip_s:.2f}× |")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


def _repeat(step) -> Iterator[None]:
    while True:
        yield step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--frames", type=int, default=16, help="frames per window (num_frames)")
    parser.add_argument("--input", default="rgb+diff", help="rgb, diff or rgb+diff (the default of training)")
    parser.add_argument("--hops", type=int, default=40, help="records timed per model and method")
    parser.add_argument("--accuracy", action="store_true", help="accuracy on long labelled streams instead of speed")
    parser.add_argument("--training", action="store_true", help="the cost of a training step, --online against clips")
    parser.add_argument("--online", help="--accuracy: a checkpoint trained with --online")
    parser.add_argument("--clips", help="--accuracy: a checkpoint of the same architecture trained on clips")
    parser.add_argument("--streams", help="--accuracy: the streams/ folder of `vidclf synth --task stream`")
    parser.add_argument("--count", type=int, default=1, help="--accuracy: streams used")
    parser.add_argument("--seconds", type=float, default=600, help="--accuracy: seconds of each stream used")
    parser.add_argument("--edge", type=float, default=100, help="--accuracy: seconds compared at the start and end")
    parser.add_argument("--methods", default="step,online-windows,clip-windows", help="--accuracy: which to run")
    parser.add_argument("--reset", type=float, help="--accuracy: restart the step's state every RESET seconds")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    accuracy(args) if args.accuracy else training_cost(args) if args.training else speed(args)


if __name__ == "__main__":
    main()
