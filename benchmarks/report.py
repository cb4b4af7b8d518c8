"""What `vidclf evaluate --report` costs at scale, and how fast a browser opens the page.  (run by hand)

1. The page of a large evaluation: 100 classes and 10,000 videos (random probabilities; the shown
   videos are real synth clips at 112², 16 frames, 3 clips), `report.write` timed, then headless
   Chromium timed loading it against an empty page.
2. End to end: `vidclf evaluate --split all` over a synth set of `--videos` clips, with and without
   `--report` (and with `--animate --neighbours`), on a model trained for one epoch.

    python benchmarks/report.py                   # about 5 minutes on 2 cores
    python benchmarks/report.py --videos 600
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from vidclf.checkpoint import Classifier
from vidclf.data.files import Sample
from vidclf.evaluate import compute_metrics
from vidclf.models import build_model
from vidclf.preprocess import Preprocess
from vidclf.report import Evaluated, Selection, write
from vidclf.report.gallery import pick
from vidclf.synth import write_dataset


def large_page(root: Path, *, classes: int = 100, videos: int = 10_000, gallery: int = 50) -> None:
    clips = write_dataset(root / "clips", clips_per_class=10, frames=48, size=128)
    pre = Preprocess(num_frames=16, size=112)
    names = [f"class {i:03d}" for i in range(classes)]
    clf = Classifier(build_model("cnn-lstm", classes), names, pre, root / "run" / "best.pt")
    generator = torch.Generator().manual_seed(0)
    samples = [Sample(str(clips[i % len(clips)]), int(torch.randint(classes, (1,), generator=generator)))
               for i in range(videos)]
    probabilities = (3 * torch.randn(videos, classes, generator=generator)).softmax(dim=1)
    labels = torch.tensor([s.label for s in samples])
    confusion = torch.bincount(labels * classes + probabilities.argmax(dim=1), minlength=classes ** 2)
    evaluation = {"clip_accuracy": 0.0, "failed": [],
                  **compute_metrics(confusion.view(classes, classes), top_k_correct=0, classes=names, k=5)}
    errors, unsure = pick(probabilities, labels, limit=gallery)
    start = time.perf_counter()
    index = write(root / "report", Selection(probabilities, errors, unsure, {}), clf=clf,
                  checkpoint={"model": {"name": "cnn-lstm", "config": {}}}, animate=True,
                  evaluated=Evaluated(samples, "synthetic", "val", (3, 1)), evaluation=evaluation, workers=2)
    written = time.perf_counter() - start
    size = sum(f.stat().st_size for f in (root / "report").rglob("*") if f.is_file())
    print(f"{classes} classes, {videos} videos, gallery {gallery}: written in {written:.1f} s, "
          f"index.html {index.stat().st_size / 1e3:.0f} kB, folder {size / 1e6:.1f} MB")
    if shutil.which("chromium"):
        empty = root / "empty.html"
        empty.write_text("<!doctype html><title>empty</title>")
        base, page = (_chromium_seconds(p, root / "shot.png") for p in (empty, index))
        print(f"headless Chromium, load and screenshot: {page:.2f} s (an empty page: {base:.2f} s)")


def _chromium_seconds(page: Path, shot: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,4000",
                    f"--screenshot={shot}", page.as_uri()], capture_output=True, check=True, timeout=300)
    return time.perf_counter() - start


def end_to_end(root: Path, videos: int) -> None:
    data = root / "data"
    write_dataset(data, clips_per_class=videos // 6, frames=32, size=64)
    vidclf = [sys.executable, "-m", "vidclf"]
    subprocess.run(vidclf + ["train", "--data", str(data), "--epochs", "1", "--frames", "8", "--size", "48",
                             "--out", str(root / "models"), "--no-cache", "--quiet"], check=True)
    model = str(next((root / "models").rglob("best.pt")))
    base = vidclf + ["evaluate", "--model", model, "--data", str(data), "--split", "all", "--quiet"]
    for extra in ([], ["--report", str(root / "r1")], ["--report", str(root / "r2"), "--animate", "--neighbours"]):
        start = time.perf_counter()
        subprocess.run(base + extra, check=True, stdout=subprocess.DEVNULL)
        print(f"evaluate {' '.join(extra) or '(no report)'} over {videos} videos: {time.perf_counter() - start:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=1200, help="videos of the end-to-end run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        large_page(Path(tmp) / "large")
        end_to_end(Path(tmp) / "e2e", args.videos)


if __name__ == "__main__":
    main()
