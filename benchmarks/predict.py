"""Prediction throughput against the machine's bound: decode alone, the model alone, and `predict`, in one run.
(run by hand, never in CI)

On a CPU node decoding and the model share the cores, so the best `predict` can do is the sum-of-work
bound: a clip costs its decode plus its forward pass, 1 / (1/decode + 1/model). Both sides are timed
bare: decode alone is `video.load_clip` in `workers` processes with nothing handed over, the model
alone is its forward pass on random input of the checkpoint's shape (architecture, input channels,
frames, size) with torch's own threads, as a user runs a model, without the uint8 → float
preprocessing that predict also does. Then `predict` on the same files, and its ratio to the bound
and to the model alone. Predict runs the model in lanes (`vidclf/lanes.py`: one intra-op thread a
core, each lane with its own batch), which on a small CPU can beat torch's own threads: so the
table also gives a stricter bound, with the model alone timed in lanes and with its preprocessing,
and predict's ratio to that. The same for one long video through `predict_windows`: decode alone
is `video.iter_windows` here, with OpenCV's threads. A row for predict's own decoding without the
model (the lanes' children writing into shared memory, child starts included) shows what the
hand-over costs. Predict first makes the process keep freed memory (`lanes.keep_freed_memory`:
page faults had cost the model up to two fifths of its time); every row is timed after that, and
the model alone once before it, for the record. The load average is printed before and after: other work on the machine moves
every number, and the model with torch's threads most of all.

    python benchmarks/predict.py --device cpu --files 480
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import resource
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from vidclf.checkpoint import Classifier
from vidclf.data import video
from vidclf.data.datasets import ClipDataset
from vidclf.data.feed import BatchDecoder
from vidclf.data.files import Sample
from vidclf.device import resolve_device
from vidclf.models import build_model
from vidclf.lanes import in_lanes, keep_freed_memory
from vidclf.predict import choose_workers, lane_threads, predict, predict_windows
from vidclf.preprocess import Preprocess, channels_first, in_channels, to_model_input
from vidclf.synth import write_dataset

BATCH = 16


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _decode_share(paths: list[str], pre: Preprocess) -> int:
    """A bare decoding process: its share of the files' centre clips, one decoder thread, nothing returned."""
    for path in paths:
        video.load_clip(path, num_frames=pre.num_frames, size=pre.size, sampling=pre.sampling, stride=pre.frame_stride)
    return len(paths)


def bare_decode(paths: list[str], pre: Preprocess, workers: int) -> float:
    """Clips/s of `workers` processes decoding (started and warmed before the clock starts)."""
    processes = max(workers, 1)
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        pool.starmap(_decode_share, [(paths[:2], pre)] * processes)  # imports and first opens
        start = time.perf_counter()
        done = sum(pool.starmap(_decode_share, [(paths[i::processes], pre) for i in range(processes)]))
        return done / (time.perf_counter() - start)


def lanes_rate(lanes: int, batches: int, lane) -> float:
    """Clips/s of `batches` jobs of BATCH clips run by `lanes` lanes (`lane(i)` as `in_lanes` takes it)."""
    jobs = iter(range(batches))
    start = time.perf_counter()
    done = sum(in_lanes(lanes, lambda: next(jobs, None), lane, threads=lane_threads(lanes)))
    return done / (time.perf_counter() - start)


def feed_decode(paths: list[str], pre: Preprocess, workers: int) -> float:
    """Clips/s of predict's own decoding (each lane's child writing batches into shared memory), no model."""
    dataset = ClipDataset([Sample(p, 0) for p in paths], pre, threads=1 if workers else 0)

    @contextlib.contextmanager
    def lane(_: int):
        with BatchDecoder(dataset, BATCH) as decoder:
            yield lambda k: len(decoder.decode(range(k * BATCH, min((k + 1) * BATCH, len(paths)))).lengths)

    return lanes_rate(max(workers, 1), -(-len(paths) // BATCH), lane)


def model_alone(model: torch.nn.Module, pre: Preprocess, device: torch.device, clips: int, *,
                preprocess: bool = False, lanes: int | None = None) -> float:
    """Clips/s of the forward pass on random input in batches of BATCH: as a user runs a model (torch's
    own threads), or in `lanes` as predict does; with `preprocess`, from uint8 clips through
    `to_model_input`, as predict feeds it."""
    lengths = torch.full((BATCH,), pre.num_frames, device=device)
    planes = torch.randint(0, 256, (BATCH, pre.num_frames, 3, pre.size, pre.size), dtype=torch.uint8, device=device)
    raw = planes.permute(0, 1, 3, 4, 2)  # (B, T, H, W, 3) over frame planes, as predict's batches are (feed.py)
    x = torch.randn(BATCH, pre.num_frames, in_channels(pre.input), pre.size, pre.size, device=device)

    @torch.inference_mode()
    def step(_: object = None) -> int:
        model(to_model_input(channels_first(raw), lengths, pre) if preprocess else x, lengths)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return BATCH

    step()
    if lanes is not None:
        return lanes_rate(lanes, clips // BATCH, lambda _: contextlib.nullcontext(step))
    start = time.perf_counter()
    for _ in range(clips // BATCH):
        step()
    return clips // BATCH * BATCH / (time.perf_counter() - start)


def bare_windows(path: str, pre: Preprocess, window: int, stride: int) -> float:
    """Windows/s of decoding one video's windows here, with OpenCV's threads, nothing handed over."""
    start = time.perf_counter()
    n = sum(1 for _ in video.iter_windows(path, window=window, stride=stride, num_frames=pre.num_frames, size=pre.size,
                                         sampling=pre.sampling, frame_stride=pre.frame_stride, threads=0))
    return n / (time.perf_counter() - start)


def bound(decode: float, model: float) -> float:
    """The sum-of-work bound: each clip costs its decode plus its forward pass on the same cores."""
    return 1 / (1 / decode + 1 / model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--arch", default="cnn-lstm")
    parser.add_argument("--files", type=int, default=480)
    parser.add_argument("--source-size", type=int, default=128)
    parser.add_argument("--long-frames", type=int, default=3000, help="frames of the long video (25 fps)")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes [default: predict's choice]")
    args = parser.parse_args()
    device = resolve_device(args.device)
    pre = Preprocess(num_frames=16, size=64)
    model = build_model(args.arch, 6, in_channels=in_channels(pre.input)).to(device).eval()
    clf = Classifier(model, [str(i) for i in range(6)], pre, Path("random-weights"))
    load_before = os.getloadavg()
    glibc_default = model_alone(model, pre, device, args.files)  # before the setting below: for the record
    keep_freed_memory()  # what predict does first: every row below is timed with it
    with tempfile.TemporaryDirectory() as tmp:
        paths = [str(p) for p in write_dataset(Path(tmp) / "d", clips_per_class=args.files // 6, frames=48,
                                                      size=args.source_size, seed=0)]
        workers = choose_workers(len(paths), args.workers)
        (long_video,) = write_dataset(Path(tmp) / "long", classes=1, clips_per_class=1, frames=args.long_frames,
                                      size=args.source_size, seed=1)

        lanes = max(workers, 1)
        decode = bare_decode(paths, pre, lanes)
        feed = feed_decode(paths, pre, workers)
        forward = model_alone(model, pre, device, len(paths))
        with_pre = model_alone(model, pre, device, len(paths), preprocess=True)
        in_lanes_rate = model_alone(model, pre, device, len(paths), preprocess=True, lanes=lanes)
        start = time.perf_counter()
        n = sum(1 for _ in predict(paths, clf, device=device, workers=args.workers, views=(1, 1)))
        both = n / (time.perf_counter() - start)

        window, stride = 2.0, 1.0  # seconds, at 25 fps
        windows_decode = bare_windows(str(long_video), pre, window=50, stride=25)
        before = rss_gib()
        start = time.perf_counter()
        record = predict_windows(str(long_video), clf, device=device, window=window, stride=stride)
        windows = len(record["windows"]) / (time.perf_counter() - start)
    load_after = os.getloadavg()

    files_bound, windows_bound = bound(decode, forward), bound(windows_decode, forward)
    files_lanes, windows_lanes = bound(decode, in_lanes_rate), bound(windows_decode, in_lanes_rate)
    table = Table(title=f"{device}, {args.arch}, {len(paths)} files of 48 frames at {args.source_size}², "
                        f"16 frames → 64² ({pre.input}), batch {BATCH}, {workers} decoding processes; "
                        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    for col in ("what", "rate", "of the bound", "of the model alone", "of the lanes' bound"):
        table.add_column(col)
    table.add_row(f"decode alone (load_clip in {lanes} processes)", f"{decode:.1f} clips/s")
    table.add_row("  predict's decoding alone (lanes' children → shared memory)", f"{feed:.1f} clips/s")
    table.add_row(f"model alone (forward, {torch.get_num_threads()} threads)", f"{forward:.1f} clips/s", "", "1.00")
    table.add_row("  the same before keep_freed_memory (glibc's defaults)", f"{glibc_default:.1f} clips/s", "",
                  f"{glibc_default / forward:.2f}")
    table.add_row("  with its preprocessing (uint8 → input)", f"{with_pre:.1f} clips/s", "", f"{with_pre / forward:.2f}")
    table.add_row(f"  with its preprocessing, in {lanes} lanes of {lane_threads(lanes)} threads",
                  f"{in_lanes_rate:.1f} clips/s", "", f"{in_lanes_rate / forward:.2f}")
    table.add_row("sum-of-work bound: decode alone + model alone", f"{files_bound:.1f} clips/s", "1.00",
                  f"{files_bound / forward:.2f}")
    table.add_row("  the same with the model in lanes, with its preprocessing", f"{files_lanes:.1f} clips/s", "", "",
                  "1.00")
    table.add_row("predict", f"{both:.1f} clips/s", f"{both / files_bound:.2f}", f"{both / forward:.2f}",
                  f"{both / files_lanes:.2f}")
    table.add_row(f"windows: decode alone (one video of {args.long_frames} frames, OpenCV's threads)",
                  f"{windows_decode:.1f} windows/s")
    table.add_row("windows: sum-of-work bound", f"{windows_bound:.1f} windows/s", "1.00")
    table.add_row("  the same with the model in lanes, with its preprocessing", f"{windows_lanes:.1f} windows/s", "",
                  "", "1.00")
    table.add_row(f"windows: predict_windows, {len(record['windows'])} windows of {window:g} s every {stride:g} s",
                  f"{windows:.1f} windows/s", f"{windows / windows_bound:.2f}", "", f"{windows / windows_lanes:.2f}")
    table.add_row("windows: peak RSS", f"{before:.2f} → {rss_gib():.2f} GiB")
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
