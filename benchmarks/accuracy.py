"""Validation accuracy of each architecture × input mode on the synth tasks.  (run by hand, never in CI)

For each task, one dataset is written with separate train/ and val/ folders, so every run, the
single-frame control and the baseline see the same split. Each model is trained by vidclf's own
loop (`train.fit`, the CLI's defaults unless given) once per seed; the table shows the mean ± sd of
the last epoch's validation accuracy (not the best epoch's: that would pick on the validation set).

- single frame: the CNN+LSTM on one frame per clip (rgb): what appearance alone tells.
- frame-diff logistic regression: two hand-made features per clip, the mean absolute frame
  difference and that divided by the mean spatial gradient (a crude speed estimate), standardised.

    python benchmarks/accuracy.py                                  # both tasks, 3 seeds (about 40 min on 2 cores)
    python benchmarks/accuracy.py --tasks speed --archs cnn-lstm --inputs rgb,diff --seeds 1
    python benchmarks/accuracy.py --tasks motion --inputs rgb+diff --caches on,off   # JPEG cache vs decoded frames
    python benchmarks/accuracy.py --tasks motion --archs cnn-lstm --inputs rgb+diff --imbalance 10 \
        --balances none,sampler,weights --no-controls                         # imbalanced classes
    python benchmarks/accuracy.py --tasks multi --inputs rgb+diff          # multi-label: mAP, exact sets

The multi task (multi-label, `synth --task multi` over the first 4 motions: 11 label sets) keeps two
pairs of labels out of training (UNSEEN_PAIRS: their clips are only in val/), so "unseen exact" says
how often the model gets a combination right that it never saw: a model of combinations gets none.
Its table: the last epoch's validation mAP and share of exactly right label sets (thresholds chosen on
the validation split, as training chooses them), and the exact-set share of the unseen-pair clips.

`--imbalance R` keeps a geometric share of each class's training clips, from all of them for the
first class down to 1/R for the last (validation stays balanced, so its accuracy is the mean
per-class accuracy); "class acc" is the last epoch's mean per-class validation accuracy.

"decoded val acc" scores each run's last.pt on validation clips decoded from the videos, as
`predict` sees them; "val acc" is what training measured (on cached frames when the cache is on).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from vidclf.checkpoint import load_classifier
from vidclf.data.datasets import ClipDataset, clip_loader
from vidclf.evaluate import evaluate_samples, iter_logits, split_samples
from vidclf.data.files import scan
from vidclf.synth import multi_label_sets, task_classes, write_dataset
from vidclf.train import TrainConfig, fit
from vidclf.data.video import load_clip

console = Console(stderr=True)


def write_split(root: Path, task: str, train_per_class: int, val_per_class: int, frames: int, size: int,
                imbalance: float = 1.0) -> None:
    write_dataset(root / "train", task=task, clips_per_class=train_per_class, frames=frames, size=size, seed=0)
    write_dataset(root / "val", task=task, clips_per_class=val_per_class, frames=frames, size=size, seed=1)
    names = task_classes(task)
    for i, name in enumerate(names):  # class i keeps R^(-i/(k-1)) of its clips
        keep = max(1, round(train_per_class * imbalance ** (-i / max(len(names) - 1, 1))))
        for path in sorted((root / "train" / name).iterdir())[keep:]:
            path.unlink()


def diff_features(path: str, frames: int, size: int) -> np.ndarray:
    clip, length = load_clip(path, num_frames=frames, size=size)
    x = clip[:length].astype(np.float32).mean(axis=3)  # (T, H, W) grey
    change = np.abs(np.diff(x, axis=0)).mean()
    gradient = (np.abs(np.diff(x, axis=1)).mean() + np.abs(np.diff(x, axis=2)).mean()) / 2
    return np.array([change, change / (gradient + 1e-6)], np.float32)


def logistic_regression_accuracy(data: Path, frames: int, size: int) -> float:
    """Multinomial logistic regression on `diff_features`, fitted on train/, scored on val/."""
    splits = scan(data)

    def features(samples):
        x = torch.from_numpy(np.stack([diff_features(s.path, frames, size) for s in samples]))
        return x, torch.tensor([s.label for s in samples])

    (xt, yt), (xv, yv) = features(splits.train), features(splits.val)
    mean, std = xt.mean(0), xt.std(0) + 1e-6
    xt, xv = (xt - mean) / std, (xv - mean) / std
    linear = torch.nn.Linear(xt.shape[1], len(splits.classes))
    opt = torch.optim.LBFGS(linear.parameters(), max_iter=500)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(linear(xt), yt) + 1e-3 * linear.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return (linear(xv).argmax(1) == yv).float().mean().item()


def fit_accuracy(data: Path, out: Path, args, *, arch: str, input_mode: str, frames: int, seed: int,
                 cached: bool = True, balance: str = "none") -> tuple[float, float, float]:
    """(the last epoch's validation accuracy as training measured it, on cached frames when `cached`;
    its mean per-class accuracy; the same model's accuracy on frames decoded from the videos, as
    `predict` sees them)."""
    cfg = TrainConfig(data=str(data), arch=arch, input=input_mode, num_frames=frames, size=args.size,
                      epochs=args.epochs, seed=seed, workers=args.workers, device=args.device, balance=balance,
                      cache=str(out / "cache") if cached else None, out=str(out / "models"))
    result = fit(cfg, console=Console(stderr=True, quiet=True), show_progress=False)
    last = result.history[-1]
    return last["val_acc"], last["val_class_acc"], decoded_accuracy(result.run_dir / "last.pt", data)


def decoded_accuracy(checkpoint: Path, data: Path) -> float:
    """Validation accuracy of a checkpoint on clips decoded from the videos (no cache): predict's input."""
    cpu = torch.device("cpu")
    clf = load_classifier(checkpoint, device=cpu)
    loader = clip_loader(ClipDataset(scan(data).val, clf.preprocess), batch_size=32, workers=0, device=cpu,
                         pad_to=clf.preprocess.num_frames)
    hits = [ok for batch, logits in iter_logits(clf.model, loader, clf.preprocess, cpu)
            for ok in (logits.argmax(1) == batch.labels).tolist()]
    return sum(hits) / len(hits)


MULTI_LABELS = 4  # the multi task's labels: the first motions
UNSEEN_PAIRS = ("down;rotate_ccw", "left;right")  # label sets kept out of training


def write_multi(root: Path, train_per_set: int, val_per_set: int, frames: int, size: int) -> Path:
    """train/ (seed 0, without UNSEEN_PAIRS) and val/ (seed 1, every set) of the multi task, in one
    manifest with a split column; returns its path."""
    import csv

    rows = []
    for split, per_set, seed in (("train", train_per_set, 0), ("val", val_per_set, 1)):
        write_dataset(root / split, task="multi", classes=MULTI_LABELS, clips_per_class=per_set, frames=frames,
                      size=size, seed=seed)
        with (root / split / "labels.csv").open() as f:
            rows += [{"path": f"{split}/{r['path']}", "labels": r["labels"], "split": split} for r in csv.DictReader(f)
                     if split == "val" or r["labels"] not in UNSEEN_PAIRS]
    with (root / "labels.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "labels", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return root / "labels.csv"


def fit_multi(manifest: Path, out: Path, args, *, arch: str, input_mode: str, seed: int,
              mix: str = "none") -> tuple[float, float, float]:
    """(the last epoch's validation mAP, its exact-set share, the exact-set share of the unseen-pair clips,
    decoded from the videos as `predict` sees them, at the thresholds training chose)."""
    cfg = TrainConfig(data=str(manifest), arch=arch, input=input_mode, num_frames=args.frames, size=args.size,
                      epochs=args.epochs, seed=seed, workers=args.workers, device=args.device, mix=mix,
                      mix_alpha=args.mix_alpha, cache=str(out / "cache"), out=str(out / "models"))
    result = fit(cfg, console=Console(stderr=True, quiet=True), show_progress=False)
    last = result.history[-1]
    cpu = torch.device("cpu")
    clf = load_classifier(result.run_dir / "last.pt", device=cpu)
    unseen = [s for s in split_samples(str(manifest), "val", clf.classes, multi_label=True)
              if ";".join(clf.classes[i] for i in s.label) in UNSEEN_PAIRS]
    return last["val_map"], last["val_acc"], evaluate_samples(clf, unseen, device=cpu)["exact_set"]


def multi_table(args, tmp: Path) -> Table:
    sets = len(multi_label_sets(task_classes("multi")[:MULTI_LABELS]))
    manifest = write_multi(tmp / "multi", args.train_clips // sets, args.val_clips // sets, args.frames, args.size)
    table = Table(title=f"multi-label task ({MULTI_LABELS} labels, {sets} sets, {len(UNSEEN_PAIRS)} pairs never in "
                        f"training), mean ± sd over {args.seeds} seeds; T={args.frames}, {args.size}², {args.epochs} epochs")
    for col in ("model", "input", "mix", "val mAP", "exact set", "unseen exact", "runs (mAP/exact/unseen)"):
        table.add_column(col, justify="left" if col in ("model", "input", "mix") else "right")
    for arch, inp, mix in [(a, i, m) for a in args.archs.split(",") for i in args.inputs.split(",")
                           for m in args.mixes.split(",")]:
        scores = [fit_multi(manifest, tmp / "multi", args, arch=arch, input_mode=inp, seed=s, mix=mix)
                  for s in range(args.seeds)]
        maps, exact, unseen = zip(*scores)
        cells = (arch, inp, mix, summary(maps), summary(exact), summary(unseen),
                 " ".join(f"{m:.3f}/{e:.3f}/{u:.3f}" for m, e, u in scores))
        table.add_row(*cells)
        console.print("  ".join(cells))  # as measured, in case the run is cut short
    return table


def summary(accs: list[float]) -> str:
    sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
    return f"{statistics.mean(accs):.3f} ± {sd:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="motion,speed")
    parser.add_argument("--archs", default="cnn-lstm,convgru")
    parser.add_argument("--inputs", default="rgb,diff,rgb+diff")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--train-clips", type=int, default=192, help="training clips per task (split over classes)")
    parser.add_argument("--val-clips", type=int, default=96)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--caches", default="on", help="on, off or on,off: train from the decode cache (JPEG "
                                                         "frames) and/or from frames decoded each epoch")
    parser.add_argument("--imbalance", type=float, default=1.0, help="largest/smallest training class")
    parser.add_argument("--balances", default="none", help="--balance modes to train with: none,sampler,weights")
    parser.add_argument("--mixes", default="none", help="multi task: --mix modes to train with: none,mixup,cutmix")
    parser.add_argument("--mix-alpha", type=float, default=0.2)
    parser.add_argument("--no-controls", action="store_true", help="skip the single-frame and logistic controls")
    args = parser.parse_args()
    seeds = range(args.seeds)
    table = Table(title=f"validation accuracy, mean ± sd over {args.seeds} seeds; {args.train_clips} train / "
                        f"{args.val_clips} val clips per task, T={args.frames}, {args.size}², {args.epochs} epochs"
                        + (f", training classes {args.imbalance:g}:1" if args.imbalance != 1 else ""))
    for col in ("task", "model", "input", "cache", "balance", "val acc", "class acc", "decoded val acc", "runs"):
        table.add_column(col, justify="right" if "acc" in col else "left")

    def add(*cells: str) -> None:
        table.add_row(*cells)
        console.print("  ".join(cells))  # as measured, in case the run is cut short

    with tempfile.TemporaryDirectory() as tmp:
        tasks = args.tasks.split(",")
        if "multi" in tasks:
            Console().print(multi_table(args, Path(tmp)))
        for task in (t for t in tasks if t != "multi"):
            k = len(task_classes(task))
            data = Path(tmp) / task
            write_split(data, task, args.train_clips // k, args.val_clips // k, args.frames, args.size, args.imbalance)
            runs = []
            if not args.no_controls:
                add(task, "frame-diff logistic regression", "2 features", "-", "-",
                    f"{logistic_regression_accuracy(data, args.frames, args.size):.3f}", "-", "-", "1")
                runs = [("cnn-lstm (single frame)", "cnn-lstm", "rgb", 1)]
            runs += [(arch, arch, inp, args.frames) for arch in args.archs.split(",") for inp in args.inputs.split(",")]
            for (label, arch, inp, frames), cache, balance in [(r, c, b) for r in runs for c in args.caches.split(",")
                                                               for b in args.balances.split(",")]:
                scores = [fit_accuracy(data, Path(tmp), args, arch=arch, input_mode=inp, frames=frames, seed=s,
                                       cached=cache == "on", balance=balance) for s in seeds]
                accs, class_accs, decoded = zip(*scores)
                add(task, label, inp, cache, balance, summary(accs), summary(class_accs), summary(decoded),
                    " ".join(f"{a:.3f}/{d:.3f}" for a, _, d in scores))
    if table.rows:
        Console().print(table)


if __name__ == "__main__":
    main()
