"""Prediction throughput: many files, and one long video in windows.  (run by hand, never in CI)

For N synth files: decode alone (vidclf's loader, no model), the model alone (random clips), and
`predict_files` doing both; the target is ≥ 0.9× the slower of the two. Then one long video through
`predict_windows`, with peak memory, to show it stays bounded.

    python benchmarks/predict.py --device cpu
"""

from __future__ import annotations

import argparse
import functools
import resource
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from vidclf.checkpoint import Classifier
from vidclf.data.datasets import ClipDataset, collate, default_workers
from vidclf.data.files import Sample
from vidclf.device import resolve_device
from vidclf.models import build_model
from vidclf.predict import choose_workers, predict, predict_windows
from vidclf.preprocess import Preprocess, in_channels
from vidclf.synth import write_dataset


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--arch", default="cnn-lstm")
    parser.add_argument("--files", type=int, default=192)
    parser.add_argument("--source-size", type=int, default=128)
    parser.add_argument("--long-frames", type=int, default=3000, help="frames of the long video (25 fps)")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    device = resolve_device(args.device)
    workers = default_workers() if args.workers is None else args.workers
    pre = Preprocess(num_frames=16, size=64)
    model = build_model(args.arch, 6, in_channels=in_channels(pre.input)).to(device).eval()
    clf = Classifier(model, [str(i) for i in range(6)], pre, Path("random-weights"))
    with tempfile.TemporaryDirectory() as tmp:
        paths = [str(p) for p in write_dataset(Path(tmp) / "d", clips_per_class=args.files // 6, frames=48,
                                                      size=args.source_size, seed=0)]
        loader = torch.utils.data.DataLoader(
            ClipDataset([Sample(p, 0) for p in paths], pre), batch_size=16, num_workers=workers,
            collate_fn=functools.partial(collate, pad_to=pre.num_frames))
        start = time.perf_counter()
        for _ in loader:
            pass
        decode = len(paths) / (time.perf_counter() - start)

        x = torch.randn(16, pre.num_frames, in_channels(pre.input), pre.size, pre.size, device=device)
        lengths = torch.full((16,), pre.num_frames, device=device)
        with torch.inference_mode():
            model(x, lengths)
            start = time.perf_counter()
            for _ in range(len(paths) // 16):
                model(x, lengths)
            if device.type == "cuda":
                torch.cuda.synchronize()
        model_rate = (len(paths) // 16) * 16 / (time.perf_counter() - start)

        start = time.perf_counter()
        n = sum(1 for _ in predict(paths, clf, device=device, workers=args.workers))  # vidclf's choice of workers
        both = n / (time.perf_counter() - start)

        long_path = Path(tmp) / "long"
        (long_video,) = write_dataset(long_path, classes=1, clips_per_class=1, frames=args.long_frames,
                                      size=args.source_size, seed=1)
        before = rss_gib()
        start = time.perf_counter()
        record = predict_windows(str(long_video), clf, device=device, window=2.0, stride=1.0)
        long_s = time.perf_counter() - start

    table = Table(title=f"{device}, {args.arch}, {len(paths)} files of 48 frames at {args.source_size}², "
                        f"16 frames → 64², {workers} decoding workers alone, "
                        f"{choose_workers(len(paths), args.workers)} beside the model")
    for col in ("what", "clips/s", "ratio"):
        table.add_column(col)
    slower = min(decode, model_rate)
    table.add_row("decode only (vidclf loader)", f"{decode:.1f}", f"{decode / slower:.2f}")
    table.add_row("model only (random clips)", f"{model_rate:.1f}", f"{model_rate / slower:.2f}")
    table.add_row("predict_files (both)", f"{both:.1f}", f"{both / slower:.2f} of the slower")
    table.add_row(f"one video of {args.long_frames} frames, {len(record['windows'])} windows of 2 s",
                  f"{len(record['windows']) / long_s:.1f} windows/s",
                  f"{args.long_frames / long_s:.0f} frames/s; peak RSS {before:.2f} → {rss_gib():.2f} GiB")
    Console().print(table)


if __name__ == "__main__":
    main()
