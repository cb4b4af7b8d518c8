"""The fit loop: epochs of training and validation, Rich progress on stderr, safe checkpoints, resume.

Every random draw of a step (data order, clip sampling, augmentation, dropout) is seeded from
(seed, epoch, step), so a run interrupted and resumed from `last.pt` ends exactly where an
uninterrupted run with the same seed does.
"""

from __future__ import annotations

import csv
import math
import signal
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from vidclf import checkpoint, distributed
from vidclf.cache import DEFAULT_SIZE, ClipCache, default_cache_dir, parse_size
from vidclf.datasets import ClipDataset, EpochSampler, clip_loader, scan
from vidclf.decoder import DEFAULT_TIMEOUT, Decoder
from vidclf.errors import CheckpointError, DatasetError
from vidclf.device import autocast, autocast_dtype, resolve_device
from vidclf.evaluate import iter_logits
from vidclf.models import build_model
from vidclf.preprocess import Preprocess, in_channels, step_seed, to_model_input

METRIC_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "clips_per_s",
                  "data_wait", "train_clips", "val_clips")


@dataclass
class TrainConfig:
    data: str = "data"  # dataset root (class folders, train/val/test folders) or a CSV manifest
    arch: str = "cnn-lstm"  # a name from `vidclf models`
    model: dict[str, Any] = field(default_factory=dict)  # architecture options; None values keep defaults
    num_frames: int = 16  # frames per clip
    size: int = 64  # frames resized to size×size
    frame_stride: int = 1  # gap between the frames of a random training clip
    input: str = Preprocess.input  # rgb | diff | rgb+diff
    batch_size: int = 16
    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine | step (×0.1 at 1/3 and 2/3 of the epochs) | constant
    val_split: float = 0.2  # fraction of each class held out when the layout has no val/ folder
    seed: int = 0
    hflip: bool = False  # flips turn 'left' into 'right': off unless direction does not matter
    patience: int | None = None  # stop after this many epochs without a better validation metric
    monitor: str = "val_acc"  # val_acc | val_loss: what "best" means
    workers: int | None = None  # DataLoader processes; None: the cores this process may use
    device: str = "auto"  # auto | cpu | cuda[:N]
    precision: str = "auto"  # auto | 32 | bf16 | 16
    cache: str | None = ""  # decode cache folder; "" the user cache folder, None no cache
    cache_size: str = DEFAULT_SIZE  # bound on the cache's bytes on disk; least recently used entries go
    decode_timeout: float = DEFAULT_TIMEOUT  # seconds without progress before a video is abandoned; 0: no watchdog
    compile: bool = False  # torch.compile the model (slow to start; pays off on GPUs)
    out: str = "models"  # run folders are written under here


class StopSignal:
    """Set by Ctrl-C or SIGTERM; the loop finishes its step, writes last.pt and returns."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum=None, frame=None) -> None:
        self.requested = True

    def install(self) -> dict:
        return {sig: signal.signal(sig, self) for sig in (signal.SIGINT, signal.SIGTERM)}


@dataclass
class RunResult:
    run_dir: Path
    best: Path | None
    history: list[dict]
    interrupted: bool
    model: torch.nn.Module  # the trained model (this process's replica under DDP)
    steps: int  # optimizer steps taken by this process in this call


def default_workers() -> int:
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(cores, 16))


def _scheduler(optimizer, cfg: TrainConfig):
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(cfg.epochs, 1))
    if cfg.schedule == "step":
        third = max(1, math.ceil(cfg.epochs / 3))
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[third, 2 * third], gamma=0.1)
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    raise ValueError(f"--schedule should be cosine, step or constant, got {cfg.schedule!r}")


def _is_better(row: dict, best: float | None, monitor: str) -> bool:
    value = row[monitor]
    if value is None:
        return False
    return best is None or (value > best if monitor.endswith("acc") else value < best)


class EpochLog:
    """The per-epoch table on stderr (one row as each epoch ends) and metrics.csv beside the checkpoints."""

    def __init__(self, console: Console, csv_path: Path | None):
        self.console = console
        self.csv_path = csv_path
        self.header_shown = False

    def add(self, row: dict) -> None:
        if not self.header_shown:
            self.console.print("[bold]epoch  train loss  train acc  val loss  val acc       lr    time  clips/s  wait")
            self.header_shown = True

        def num(v, fmt):
            return format(v, fmt) if v is not None else "-"

        self.console.print(
            f"{row['epoch']:>5}  {row['train_loss']:>10.4f}  {row['train_acc']:>9.3f}  "
            f"{num(row['val_loss'], '>8.4f'):>8}  {num(row['val_acc'], '>7.3f'):>7}  {row['lr']:>7.1e}  "
            f"{row['seconds']:>5.1f}s  {row['clips_per_s']:>7.1f}  {row['data_wait']:>4.0%}"
        )
        if self.csv_path is not None:
            new = not self.csv_path.exists()
            with self.csv_path.open("a", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
                if new:
                    writer.writeheader()
                writer.writerow(row)


def _new_run_dir(cfg: TrainConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(cfg.out) / f"{cfg.arch}-{stamp}"
    n = 1
    while run_dir.exists():
        n += 1
        run_dir = Path(cfg.out) / f"{cfg.arch}-{stamp}-{n}"
    return run_dir


def fit(cfg: TrainConfig, *, console: Console, show_progress: bool = True,
        stop: StopSignal | None = None, resume: str | Path | None = None) -> RunResult:
    """Train `cfg.arch` on `cfg.data`; with `resume` (a last.pt) continue that run in its folder."""
    state = _resume_state(resume) if resume else None
    run_dir = Path(resume).parent if resume else None
    trainer = _Trainer(cfg, console=console, show_progress=show_progress, stop=stop or StopSignal(),
                       resume_from=state, run_dir=run_dir)
    return trainer.run()


def _resume_state(path: str | Path) -> dict:
    ckpt = checkpoint.load(path)
    if "train_config" not in ckpt or "optimizer" not in ckpt:
        raise CheckpointError(f"{path}: holds no training state to resume from (use a last.pt)")
    return ckpt


def resume_config(path: str | Path, **overrides) -> TrainConfig:
    """The saved run's configuration, with `overrides` (epochs, device, workers …) that are not None."""
    known = {f.name for f in fields(TrainConfig)}
    saved = {k: v for k, v in _resume_state(path)["train_config"].items() if k in known}
    return TrainConfig(**{**saved, **{k: v for k, v in overrides.items() if v is not None}})


class _Trainer:
    def __init__(self, cfg: TrainConfig, *, console: Console, show_progress: bool, stop: StopSignal,
                 resume_from: dict | None = None, run_dir: Path | None = None):
        self.cfg, self.console, self.show_progress, self.stop = cfg, console, show_progress, stop
        self.resume_from, self.run_dir = resume_from, run_dir

    def run(self) -> RunResult:
        cfg = self.cfg
        device = resolve_device(cfg.device)
        rank = distributed.setup(device.type)
        try:
            if device.type == "cuda":
                device = torch.device("cuda", rank.local if rank.world > 1 else device.index or 0)
                torch.cuda.set_device(device)
                torch.backends.cudnn.benchmark = True
            return self._run(device, rank)
        finally:
            distributed.teardown()

    def _run(self, device: torch.device, rank: distributed.Rank) -> RunResult:
        cfg, console = self.cfg, self.console
        say = console.print if rank.is_main else (lambda *a, **k: None)
        splits = scan(cfg.data, val_split=cfg.val_split, seed=cfg.seed)
        if not splits.train:
            raise ValueError(f"{cfg.data}: no training videos found")
        classes = splits.classes
        pre = Preprocess(num_frames=cfg.num_frames, size=cfg.size, frame_stride=cfg.frame_stride, input=cfg.input)
        cache = None if cfg.cache is None else ClipCache(cfg.cache or default_cache_dir(), parse_size(cfg.cache_size))
        if cache is not None and not cache.usable():
            say(f"[yellow]warning[/] {escape(cache.warning)}")
            cache = None
        decoder = Decoder(cfg.decode_timeout or None)
        train_set = ClipDataset(splits.train, pre, train=True, seed=cfg.seed, cache=cache, decoder=decoder)
        val_set = ClipDataset(splits.val, pre, train=False, seed=cfg.seed, cache=cache, decoder=decoder)
        train_sampler = EpochSampler(len(train_set), shuffle=True, seed=cfg.seed, rank=rank.rank, world=rank.world)
        val_sampler = EpochSampler(len(val_set), shuffle=False, rank=rank.rank, world=rank.world, pad=False)
        workers = default_workers() if cfg.workers is None else cfg.workers
        train_loader = clip_loader(train_set, batch_size=cfg.batch_size, workers=workers, device=device,
                                   pad_to=cfg.num_frames, sampler=train_sampler)
        val_loader = clip_loader(val_set, batch_size=cfg.batch_size, workers=workers, device=device,
                                 pad_to=cfg.num_frames, sampler=val_sampler) if len(val_set) else None

        torch.manual_seed(cfg.seed)  # the same initial weights on every rank and every run
        model_cfg = {**{k: v for k, v in cfg.model.items() if v is not None}, "in_channels": in_channels(cfg.input)}
        model = build_model(cfg.arch, len(classes), **model_cfg).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = _scheduler(optimizer, cfg)
        dtype = autocast_dtype(device, cfg.precision)
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        start_epoch, start_step, best, history, partial = 0, 0, None, [], None
        if self.resume_from is not None:
            r = self.resume_from
            model.load_state_dict(r["state_dict"])
            optimizer.load_state_dict(r["optimizer"])
            scheduler.load_state_dict(r["scheduler"])
            if r.get("scaler"):
                scaler.load_state_dict(r["scaler"])
            start_epoch, start_step = r["epoch"], r["step"]
            best, history, partial = r["best_metric"], r["history"], r.get("partial")
        run_dir = distributed.broadcast(self.run_dir or _new_run_dir(cfg))
        if rank.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
        net = model
        if rank.world > 1:
            net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if cfg.compile:
            # CUDA graphs on one GPU: T is padded to num_frames and lengths only gather, so shapes change
            # only with a short last batch (one more graph); 3.1x the eager ConvGRU step on an H100
            # (DESIGN.md). Not under DDP, where CUDA graphs and BatchNorm buffers are known not to mix.
            cuda_graphs = device.type == "cuda" and rank.world == 1
            net = torch.compile(net, mode="reduce-overhead" if cuda_graphs else None)

        base = {
            "model": {"name": cfg.arch, "num_classes": len(classes), "config": asdict(model.config)},
            "classes": classes,
            "preprocess": asdict(pre),
            "train_config": asdict(cfg),
        }

        def save(name: str, *, epoch: int, step: int, partial: dict | None = None) -> Path:
            path = run_dir / name
            if rank.is_main:
                checkpoint.save({
                    **base, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                    "epoch": epoch, "step": step, "best_metric": best, "history": history, "partial": partial,
                }, path)
            return path

        log = EpochLog(console if rank.is_main else Console(quiet=True), run_dir / "metrics.csv" if rank.is_main else None)
        say(f"[bold]vidclf train[/] {cfg.arch} on {cfg.data}: {len(classes)} classes, "
            f"{len(train_set)} train / {len(val_set)} val clips, {device}, "
            f"{'fp32' if dtype is None else str(dtype).removeprefix('torch.')}, run folder {run_dir}")
        reported: set[str] = set()

        def report(batch) -> None:
            for f in batch.failures:
                if f.path not in reported:
                    reported.add(f.path)
                    console.print(f"[yellow]skipped[/] {escape(f.reason)}", highlight=False)
            for warning in batch.warnings:
                if warning not in reported:
                    reported.add(warning)
                    console.print(f"[yellow]warning[/] {escape(warning)}", highlight=False)

        best_path = run_dir / "best.pt" if (run_dir / "best.pt").exists() else None
        stale = steps_taken = 0
        for epoch in range(start_epoch, cfg.epochs):
            skip = start_step if epoch == start_epoch else 0
            train_sampler.set_epoch(epoch, skip=skip * cfg.batch_size)
            sums = partial if (partial and epoch == start_epoch) else {"loss": 0.0, "correct": 0.0, "count": 0.0,
                                                                       "wait": 0.0, "seconds": 0.0}
            partial = None
            net.train()
            progress = Progress(
                TextColumn(f"epoch {epoch + 1}/{cfg.epochs}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f} acc {task.fields[acc]:.3f} {task.fields[rate]:.1f} clips/s"),
                TimeElapsedColumn(), console=console, transient=True,
                disable=not (self.show_progress and rank.is_main and console.is_terminal),  # no bars in logs
            )
            steps = len(train_loader) + skip
            step = skip
            with progress:
                task = progress.add_task("train", total=steps, completed=skip, loss=0.0, acc=0.0, rate=0.0)
                tick = time.perf_counter()
                for batch in train_loader:
                    got = time.perf_counter()
                    report(batch)
                    if not len(batch.lengths):  # the dataset replaces bad videos until none is left
                        raise DatasetError(f"{cfg.data}: no readable training video left: all "
                                           f"{len(train_set)} failed (the first: {batch.failures[0].reason})")
                    seed = step_seed(cfg.seed, epoch, step)
                    torch.manual_seed(seed)  # dropout draws, replayable on resume
                    gen = torch.Generator(device=device).manual_seed(seed)
                    clips = batch.clips.to(device, non_blocking=True)
                    lengths = batch.lengths.to(device, non_blocking=True)
                    labels = batch.labels.to(device, non_blocking=True)
                    x = to_model_input(clips, lengths, pre, generator=gen, hflip=cfg.hflip)
                    if cfg.compile:
                        torch.compiler.cudagraph_mark_step_begin()  # the previous step's graph outputs are done
                    with autocast(device, dtype):
                        logits = net(x, lengths)
                        loss = F.cross_entropy(logits.float(), labels)
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    steps_taken += 1
                    n = len(labels)
                    sums["loss"] += float(loss.detach()) * n
                    sums["correct"] += float((logits.argmax(1) == labels).sum())
                    sums["count"] += n
                    step += 1
                    done = time.perf_counter()
                    sums["wait"] += got - tick
                    sums["seconds"] += done - tick
                    tick = done
                    count = max(sums["count"], 1)
                    progress.update(task, advance=1, loss=sums["loss"] / count, acc=sums["correct"] / count,
                                    rate=sums["count"] / max(sums["seconds"], 1e-9))
                    if self.stop.requested:
                        break
            if self.stop.requested and step < steps:
                last = save("last.pt", epoch=epoch, step=step, partial=sums)
                say(f"[yellow]interrupted[/] in epoch {epoch + 1} after step {step}/{steps}; "
                    f"saved {last}; continue with: vidclf train --resume {last}")
                return RunResult(run_dir, best_path, history, interrupted=True, model=model, steps=steps_taken)

            loss_sum, correct, count, wait, seconds = distributed.all_sum(
                [sums["loss"], sums["correct"], sums["count"], sums["wait"], sums["seconds"]], device)
            val_loss = val_acc = None
            v_count = 0
            val_start = time.perf_counter()
            if val_loader is not None:
                v_loss, v_correct, v_count = 0.0, 0.0, 0.0
                # Under DDP, validate the bare model: shards may differ by a batch, and DDP's forward
                # would broadcast buffers, a collective the rank with fewer batches never joins.
                for vb, logits in iter_logits(model if rank.world > 1 else net, val_loader, pre, device, dtype):
                    report(vb)
                    if len(logits):
                        v_loss += float(F.cross_entropy(logits, vb.labels, reduction="sum"))
                        v_correct += float((logits.argmax(1) == vb.labels).sum())
                        v_count += len(vb.labels)
                v_loss, v_correct, v_count = distributed.all_sum([v_loss, v_correct, v_count], device)
                if v_count:
                    val_loss, val_acc = v_loss / v_count, v_correct / v_count
            row = {
                "epoch": epoch + 1,
                "train_loss": loss_sum / max(count, 1),
                "train_acc": correct / max(count, 1),
                "val_loss": val_loss,
                "val_acc": val_acc,
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": seconds / rank.world + time.perf_counter() - val_start,
                "clips_per_s": count / max(seconds / rank.world, 1e-9),
                "data_wait": wait / max(seconds, 1e-9),
                "train_clips": int(count),
                "val_clips": int(v_count),
            }
            scheduler.step()
            history.append(row)
            log.add(row)
            if epoch == 0 and cache is not None:
                say(f"decode cache {cache.folder}: {cache.size() / 1e9:.2f} GB of {cache.max_bytes / 1e9:g} GB")
            monitor = cfg.monitor if val_loader is not None else "train_loss"
            if _is_better(row, best, monitor):
                best, stale = row[monitor], 0
                best_path = save("best.pt", epoch=epoch + 1, step=0)
            else:
                stale += 1
            save("last.pt", epoch=epoch + 1, step=0)
            if cfg.patience is not None and stale >= cfg.patience:
                say(f"early stop: {monitor} did not improve for {cfg.patience} epochs")
                break
            if self.stop.requested:
                say(f"[yellow]interrupted[/] after epoch {epoch + 1}; continue with: "
                    f"vidclf train --resume {run_dir / 'last.pt'}")
                return RunResult(run_dir, best_path, history, interrupted=True, model=model, steps=steps_taken)
        if best_path is not None:
            say(f"[bold green]best checkpoint[/] {best_path} ({cfg.monitor if val_loader is not None else 'train_loss'}"
                f" {best:.4f})")
        return RunResult(run_dir, best_path, history, interrupted=False, model=model, steps=steps_taken)
