"""Multi-label on real footage: can a model name every source a clip shows, including pairs it never saw?
(run by hand, never in CI)

Each clip is a 2×2 grid of 32² quadrants; one or two quadrants play 16 consecutive frames of one of
four real sources (Debian packages' clips, see SOURCES), the others stay black. The labels are the
sources shown. Two of the six pairs never occur in training (HELD_OUT): a model of combinations
(one class per label set) can never predict them; a multi-label model must. The split is by time
within each source: training clips from the first 70% of its frames, validation clips from the rest,
so no validation frame is ever trained on.

The set is written as ROOT/clips/*.mp4 and ROOT/labels.csv (`path,labels,split`, labels `;`-separated),
then each architecture is trained with the CLI as a user would (`vidclf train --data ROOT/labels.csv`),
once per seed, and evaluated with `vidclf evaluate --format json`; the exact-set share on the clips
of the held-out pairs is computed from `vidclf predict`'s `labels`.

    python benchmarks/multilabel_real.py --root /work/mlreal --seeds 3 --epochs 10
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from real import read_source, write_clip  # benchmarks/real.py: the same decoding and writing

SOURCES = {  # label → the source's file name, as benchmarks/real.py names them
    "bird": "imageio__cockatoo.mp4",
    "diver": "pd-extendedview__diver.mov",
    "race": "nbsphinx__Shepard_Calais_1906_FrenchGP.ogv",
    "city": "kivy__cityCC0.mpg",
}
HELD_OUT = (("bird", "diver"), ("city", "race"))  # pairs only validation shows
CLIP = 16  # frames
QUADRANT = 32  # pixels; a clip is 2×2 quadrants


def combinations() -> list[tuple[str, ...]]:
    """Every label set a clip can show: each source alone and each pair."""
    labels = sorted(SOURCES)
    return [(label,) for label in labels] + list(itertools.combinations(labels, 2))


def compose(videos: dict[str, np.ndarray], labels: tuple[str, ...], lo: float, hi: float,
            rng: np.random.Generator) -> np.ndarray:
    """A (CLIP, 64, 64, 3) clip: each label's source in a quadrant of its own, from its frames [lo, hi)."""
    clip = np.zeros((CLIP, 2 * QUADRANT, 2 * QUADRANT, 3), np.uint8)
    for label, quadrant in zip(labels, rng.permutation(4)):
        video = videos[label]
        first, last = int(lo * len(video)), int(hi * len(video)) - CLIP
        start = int(rng.integers(first, last + 1))
        row, col = divmod(int(quadrant), 2)
        clip[:, row * QUADRANT:(row + 1) * QUADRANT, col * QUADRANT:(col + 1) * QUADRANT] = video[start:start + CLIP]
    return clip


def build(root: Path, footage: list[Path], *, train_per_set: tuple[int, int], val_per_set: tuple[int, int, int],
          seed: int = 0) -> Path:
    """Write the clips and ROOT/labels.csv; return the manifest's path.

    `train_per_set`: clips of each single source and of each pair seen in training; `val_per_set`:
    the same for validation, then for each held-out pair.
    """
    videos = {}
    for label, name in SOURCES.items():
        path = next((d / name for d in footage if (d / name).exists()), None)
        if path is None:
            sys.exit(f"missing source {name}: look in {', '.join(map(str, footage))}")
        videos[label] = read_source(path, QUADRANT)
    rng = np.random.default_rng(seed)
    rows = []
    for labels in combinations():
        held_out = labels in HELD_OUT
        counts = {"train": 0 if held_out else train_per_set[len(labels) - 1],
                  "val": val_per_set[2] if held_out else val_per_set[len(labels) - 1]}
        for split, (lo, hi) in (("train", (0.0, 0.7)), ("val", (0.7, 1.0))):
            for k in range(counts[split]):
                name = f"clips/{split}_{'+'.join(labels)}_{k:03d}.mp4"
                write_clip(root / name, compose(videos, labels, lo, hi, rng))
                rows.append((name, ";".join(labels), split))
    manifest = root / "labels.csv"
    with manifest.open("w", newline="") as f:
        csv.writer(f).writerows([("path", "labels", "split")] + rows)
    return manifest


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=True, text=True, **kwargs)


def train_and_score(manifest: Path, out: Path, arch: str, seed: int, args) -> dict:
    """Train one model with the CLI, then its validation metrics and the held-out pairs' exact-set share."""
    name = f"{arch}-s{seed}"
    start = time.perf_counter()
    run(["vidclf", "train", "--data", str(manifest), "--arch", arch, "--epochs", str(args.epochs), "--size", "64",
         "--frames", str(CLIP), "--seed", str(seed), "--out", str(out), "--name", name, "-q", *args.train_args])
    seconds = time.perf_counter() - start
    model = out / name / "last.pt"
    metrics = json.loads(run(["vidclf", "evaluate", "--data", str(manifest), "--model", str(model), "--split", "val",
                              "--format", "json", "-q"], capture_output=True).stdout)
    rows = list(csv.DictReader(manifest.open()))
    held = [manifest.parent / r["path"] for r in rows
            if r["split"] == "val" and tuple(r["labels"].split(";")) in HELD_OUT]
    records = [json.loads(line) for line in run(["vidclf", "predict", *map(str, held), "--model", str(model),
                                                 "--format", "jsonl", "-q"], capture_output=True).stdout.splitlines()]
    truth = {str(manifest.parent / r["path"]): set(r["labels"].split(";")) for r in rows}
    exact = [set(item["label"] for item in rec["labels"]) == truth[rec["path"]] for rec in records]
    return {"arch": arch, "seed": seed, "seconds": round(seconds, 1), "metrics": metrics,
            "held_out_exact": sum(exact) / len(exact)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path("/work/mlreal"))
    parser.add_argument("--footage", default="/work/footage/clips", help="folders holding SOURCES, comma-separated")
    parser.add_argument("--archs", default="cnn-lstm,convgru")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-per-set", default="16,12", help="clips of each single source, of each seen pair")
    parser.add_argument("--val-per-set", default="6,4,8", help="the same for validation, then each held-out pair")
    parser.add_argument("train_args", nargs="*", help="more `vidclf train` options, after --")
    args = parser.parse_args()
    manifest = args.root / "labels.csv"
    if not manifest.exists():
        build(args.root, [Path(p) for p in args.footage.split(",")],
              train_per_set=tuple(map(int, args.train_per_set.split(","))),
              val_per_set=tuple(map(int, args.val_per_set.split(","))))
    results = args.root / "results.jsonl"
    done = {(r["arch"], r["seed"]) for r in map(json.loads, results.open())} if results.exists() else set()
    for arch, seed in itertools.product(args.archs.split(","), range(args.seeds)):
        if (arch, seed) in done:
            continue
        row = train_and_score(manifest, args.root / "runs", arch, seed, args)
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps({k: v for k, v in row.items() if k != "metrics"}), flush=True)
    print(f"load average {os.getloadavg()[0]:.2f}; results in {results}", file=sys.stderr)


if __name__ == "__main__":
    main()
