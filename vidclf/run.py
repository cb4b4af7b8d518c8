"""Building a training run: its data, model, optimizer and state, fresh or restored from a last.pt.

`train.py` then steps what `build_run` returns; nothing here runs a training step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from rich.markup import escape

from vidclf import boardlog, distributed
from vidclf.data.balance import BALANCE, class_weights, positive_weights
from vidclf.data.cache import DEFAULT_SIZE, ClipCache, default_cache_dir, parse_size, settings_key
from vidclf.data.datasets import ClipDataset, EpochSampler, clip_loader, default_workers
from vidclf.data.files import Splits, scan
from vidclf.data.labels import with_targets
from vidclf.data.splits import check_splits, raise_or_warn
from vidclf.data.decoder import DEFAULT_TIMEOUT, Decoder
from vidclf.device import autocast_dtype
from vidclf.errors import DatasetError
from vidclf.mixing import check_mix
from vidclf.models import build_model, input_options
from vidclf.multilabel import bce_loss
from vidclf.online import check_online
from vidclf.preprocess import Preprocess, in_channels
from vidclf.start import apply_init, param_groups


@dataclass
class TrainConfig:
    data: str = "data"  # dataset root (class folders, train/val/test folders) or a CSV manifest
    multi_label: bool = False  # a sigmoid per label even when no clip has several (a manifest of several is anyway)
    arch: str = "cnn-lstm"  # a name from `vidclf models`
    model: dict[str, Any] = field(default_factory=dict)  # architecture options; None values keep defaults
    num_frames: int = 16  # frames per clip
    size: int = 64  # frames resized to size×size
    frame_stride: int = 1  # gap between the frames of a random training clip
    input: str = Preprocess.input  # rgb | diff | rgb+diff
    mean: tuple[float, float, float] | None = None  # per channel, 0–1 scale; None: vidclf's (start.resolve gives the weights')
    std: tuple[float, float, float] | None = None
    init: str | None = None  # a vidclf checkpoint whose weights the run starts from (start.apply_init)
    backbone_lr: float = 1.0  # everything but the head trains at lr × backbone_lr
    batch_size: int = 16
    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine | step (×0.1 at 1/3 and 2/3 of the epochs) | constant
    warmup: float = 0.0  # epochs over which the rate rises linearly to lr, before the schedule's decay
    label_smoothing: float = 0.0  # weight of the uniform target in the training loss
    mix: str = "none"  # none | mixup | cutmix: blend pairs of training clips and their labels
    mix_alpha: float = 0.2  # the mixing weight is drawn from Beta(mix_alpha, mix_alpha)
    val_split: float = 0.2  # fraction of each class held out when the layout has no val/ folder
    seed: int = 0
    hflip: bool = False  # flips turn 'left' into 'right': off unless direction does not matter
    patience: int | None = None  # stop after this many epochs without a better validation metric
    monitor: str = "val_acc"  # val_acc | val_class_acc (mean per-class accuracy) | val_map | val_loss: what "best"
    # means; multi-label: val_acc is the share of exactly right label sets, val_map the mean average precision
    balance: str = "none"  # none | sampler (class-balanced epochs) | weights (inverse-frequency loss weights)
    workers: int | None = None  # DataLoader processes; None: the cores this process may use
    device: str = "auto"  # auto | cpu | cuda[:N]
    precision: str = "auto"  # auto | 32 | bf16 | 16
    cache: str | None = ""  # decode cache folder; "" the user cache folder, None no cache
    cache_size: str = DEFAULT_SIZE  # bound on the cache's bytes on disk (see data/cache.py for what it keeps)
    decode_timeout: float = DEFAULT_TIMEOUT  # seconds without progress before a video is abandoned; 0: no watchdog
    compile: bool = False  # torch.compile the model (slow to start; pays off on GPUs)
    save_every: float = 10.0  # minutes between mid-epoch writes of last.pt (0: only at the end of epochs)
    tensorboard: bool = False  # write TensorBoard event files into the run folder
    out: str = "models"  # run folders are written under here
    online: bool = False  # train for live streams: clips joined end to end, a label per frame, truncated BPTT (online.py)
    sequence_clips: int = 8  # --online: clips joined into one training sequence (--batch-size counts sequences)
    chunk: int = 16  # --online: frames per chunk of truncated backpropagation (the state is carried across)
    grace: int = 0  # --online: frames after a change of label left out of the loss


@dataclass
class TrainState:
    """Where a run stands: what a last.pt restores."""

    epoch: int = 0  # the epoch to run next
    step: int = 0  # steps of that epoch already taken (a run interrupted mid-epoch)
    best: float | None = None  # the best value of the monitored metric so far
    history: list[dict] = field(default_factory=list)  # one row per finished epoch
    partial: dict | None = None  # the running sums of the interrupted epoch
    lr: float | None = None  # the rate of the last step taken (the epoch row of an epoch resumed at its end)
    thresholds: list[float] | None = None  # multi-label: per label, chosen by the last validation


@dataclass
class Run:
    """Everything a training run is made of, built once by `build_run` and then stepped by train.py."""

    cfg: TrainConfig
    device: torch.device
    rank: distributed.Rank
    classes: list[str]
    pre: Preprocess
    cache: ClipCache | None
    train_set: ClipDataset
    train_sampler: EpochSampler
    train_loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader | None
    model: torch.nn.Module  # the bare model: what checkpoints hold and what validates
    net: torch.nn.Module  # what a step calls: the model, wrapped in DDP and/or compiled
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    dtype: torch.dtype | None  # autocast dtype; None is float32
    run_dir: Path
    state: TrainState
    loss_weights: torch.Tensor | None = None  # per class, with --balance weights (multi-label: per label positive weights)
    multi_label: bool = False  # a sigmoid per label (BCE), not a softmax over classes

    def criterion(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training loss against targets: class indices (B,), or multi-label 0/1 rows (B, labels)
        that may be mixes of two clips' rows."""
        if self.multi_label:
            return bce_loss(logits, targets, pos_weight=self.loss_weights, smoothing=self.cfg.label_smoothing)
        return F.cross_entropy(logits, targets, weight=self.loss_weights, label_smoothing=self.cfg.label_smoothing)


def build_run(cfg: TrainConfig, *, device: torch.device, rank: distributed.Rank, say: Callable[[str], None],
              resume_from: dict | None = None, run_dir: Path | None = None) -> Run:
    """Data, model, optimizer and state for `cfg`; with `resume_from` (a last.pt) as that run left them."""
    _check_recipe(cfg)
    splits = scan(cfg.data, val_split=cfg.val_split, seed=cfg.seed, multi_label=cfg.multi_label)
    if not splits.train:
        raise DatasetError(f"{cfg.data}: no training videos found")
    _check_labels(cfg, splits)
    pre = _preprocess(cfg)
    raise_or_warn(check_splits(splits, cfg.data), lambda message: say(f"[yellow]warning[/] {escape(message)}"))
    cache = _cache(cfg, splits, pre, say)
    train_set, sampler, train_loader, val_loader = _data(cfg, splits, pre, cache, device, rank)
    model = _model(cfg, splits.classes, fresh=resume_from is None, say=say).to(device)
    if cfg.online:
        check_online(arch=cfg.arch, model=model, mix=cfg.mix, compile=cfg.compile, world=rank.world)
    optimizer = torch.optim.AdamW(param_groups(model, lr=cfg.lr, backbone_lr=cfg.backbone_lr), weight_decay=cfg.weight_decay)
    scheduler = _scheduler(optimizer, cfg, len(train_loader))
    dtype = autocast_dtype(device, cfg.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    state = TrainState()
    if resume_from is not None:
        state = _restore(resume_from, model, optimizer, scheduler, scaler, len(train_loader), cfg.data, splits,
                         dtype, say)
    run_dir = distributed.broadcast(run_dir or _new_run_dir(cfg))
    if rank.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    weights = None
    if cfg.balance == "weights":
        weigh = positive_weights if splits.multi_label else class_weights
        weights = torch.tensor(weigh([s.label for s in splits.train], len(splits.classes)), device=device)
    return Run(cfg, device, rank, splits.classes, pre, cache, train_set, sampler, train_loader, val_loader, model,
               _wrap(model, cfg, device, rank), optimizer, scheduler, scaler, dtype, run_dir, state, weights,
               splits.multi_label)


def _preprocess(cfg: TrainConfig) -> Preprocess:
    normalise = {"mean": tuple(cfg.mean), "std": tuple(cfg.std)} if cfg.mean and cfg.std else {}
    return Preprocess(num_frames=cfg.num_frames, size=cfg.size, frame_stride=cfg.frame_stride, input=cfg.input,
                      **normalise)


def _model(cfg: TrainConfig, classes: list[str], *, fresh: bool, say: Callable[[str], None]) -> torch.nn.Module:
    """The network, with its start's weights: pretrained weights or an --init checkpoint's for a fresh run;
    none for a continued one, whose last.pt holds them (and must not need a download again)."""
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank and every run
    options = {k: v for k, v in cfg.model.items() if v is not None and (fresh or k != "pretrained")}
    options = {**input_options(cfg.arch, in_channels=in_channels(cfg.input), num_frames=cfg.num_frames), **options}
    model = build_model(cfg.arch, len(classes), **options)
    if fresh and cfg.init:
        say(escape(apply_init(model, cfg.init, classes)))
    return model


def _check_recipe(cfg: TrainConfig) -> None:
    """Fail before any data is read, not at the first step."""
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"--schedule should be one of {', '.join(SCHEDULES)}, got {cfg.schedule!r}")
    check_mix(cfg.mix, cfg.mix_alpha)
    if not 0 <= cfg.label_smoothing < 1:
        raise ValueError(f"--label-smoothing should be in [0, 1), got {cfg.label_smoothing}")
    if cfg.warmup < 0:
        raise ValueError(f"--warmup should be ≥ 0 epochs, got {cfg.warmup}")
    if cfg.balance not in BALANCE:
        raise ValueError(f"--balance should be one of {', '.join(BALANCE)}, got {cfg.balance!r}")
    if cfg.monitor not in MONITORS:
        raise ValueError(f"--monitor should be one of {', '.join(MONITORS)}, got {cfg.monitor!r}")
    if (cfg.online and min(cfg.sequence_clips, cfg.chunk) < 1) or cfg.grace < 0:
        raise ValueError(f"--sequence-clips and --chunk should be ≥ 1 and --grace ≥ 0, got {cfg.sequence_clips}, "
                         f"{cfg.chunk} and {cfg.grace}")
    if cfg.backbone_lr <= 0:
        raise ValueError(f"--backbone-lr should be > 0 (a fraction of --lr), got {cfg.backbone_lr}")
    if cfg.tensorboard:
        boardlog.require()


def _check_labels(cfg: TrainConfig, splits: Splits) -> None:
    """Options that need one kind of labels, refused once the data says which it has."""
    if cfg.monitor == "val_map" and not splits.multi_label:
        raise ValueError(f"--monitor mAP needs multi-label data ({cfg.data} has one class a clip; --multi-label)")
    if splits.multi_label and cfg.monitor == "val_class_acc":
        raise ValueError("--monitor val_class_acc is for single-label data: use mAP, val_acc (exact sets) or val_loss")
    if splits.multi_label and cfg.balance == "sampler":
        raise ValueError("--balance sampler draws classes, and a multi-label clip has several: use --balance weights")
    if splits.multi_label and cfg.online:
        raise ValueError("--online labels every frame with one class: it does not train on multi-label data yet")


def _cache(cfg: TrainConfig, splits: Splits, pre: Preprocess, say: Callable[[str], None]) -> ClipCache | None:
    """The decode cache, told which entries are this run's (it never evicts them for each other)."""
    if cfg.cache is None:
        return None
    settings = settings_key(pre.size, pre.interpolation)
    cache = ClipCache(cfg.cache or default_cache_dir(), parse_size(cfg.cache_size),
                      keep=[ClipCache.name(s.path, settings) for s in splits.train + splits.val])
    if not cache.usable():
        say(f"[yellow]warning[/] {escape(cache.warning)}")
        return None
    return cache


def _data(cfg: TrainConfig, splits: Splits, pre: Preprocess, cache: ClipCache | None, device: torch.device,
          rank: distributed.Rank):
    """The training set with its sampler and loader, and the validation loader (None without a val split).

    Training shards are padded so that every rank takes the same steps; validation shards are not,
    so each validation clip counts exactly once.
    """
    decoder = Decoder(cfg.decode_timeout or None)
    train, val = splits.train, splits.val
    if splits.multi_label:  # batches then carry (B, labels) 0/1 rows
        train, val = with_targets(train, len(splits.classes)), with_targets(val, len(splits.classes))
    train_set = ClipDataset(train, pre, train=True, seed=cfg.seed, cache=cache, decoder=decoder)
    val_set = ClipDataset(val, pre, train=False, seed=cfg.seed, cache=cache, decoder=decoder)
    labels = [s.label for s in splits.train] if cfg.balance == "sampler" else None
    sampler = EpochSampler(len(train_set), shuffle=True, seed=cfg.seed, rank=rank.rank, world=rank.world, labels=labels)
    workers = default_workers() if cfg.workers is None else cfg.workers
    clips_per_step = cfg.batch_size * (cfg.sequence_clips if cfg.online else 1)  # --online: sequences of clips
    loader = clip_loader(train_set, batch_size=clips_per_step, workers=workers, device=device,
                         pad_to=cfg.num_frames, sampler=sampler)
    val_loader = None
    if len(val_set):
        val_sampler = EpochSampler(len(val_set), shuffle=False, rank=rank.rank, world=rank.world, pad=False)
        val_loader = clip_loader(val_set, batch_size=cfg.batch_size, workers=workers, device=device,
                                 pad_to=cfg.num_frames, sampler=val_sampler)
    return train_set, sampler, loader, val_loader


SCHEDULES = ("cosine", "step", "constant")
MONITORS = ("val_acc", "val_class_acc", "val_map", "val_loss")


def _scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped after every optimizer step: the rate rises linearly to lr over the first `cfg.warmup`
    epochs, step by step; the schedule's decay then changes it once an epoch over the epochs left.

    The decay stays per epoch by measurement: decayed every step, the CNN+LSTM's cosine was no
    better on the embedded motion task (RESULTS.md, "the recipe").
    """
    total = max(cfg.epochs * steps_per_epoch, 1)
    warm = min(round(cfg.warmup * steps_per_epoch), total - 1)
    epochs = (total - warm) / steps_per_epoch  # epochs that decay
    third = max(1, math.ceil(epochs / 3))
    decay = {
        "cosine": lambda e: 0.5 * (1 + math.cos(math.pi * min(e / epochs, 1.0))),
        "step": lambda e: 0.1 ** ((e >= third) + (e >= 2 * third)),  # ×0.1 after a third and two thirds
        "constant": lambda e: 1.0,
    }[cfg.schedule]
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warm if s < warm else decay((s - warm) // steps_per_epoch))


def _restore(saved: dict, model, optimizer, scheduler, scaler, steps_per_epoch: int, data: str, splits: Splits,
             dtype: torch.dtype | None, say: Callable[[str], None]) -> TrainState:
    classes = splits.classes
    if list(saved["classes"]) != classes:  # a moved copy of the data must hold the same classes
        raise DatasetError(f"{data}: its classes ({', '.join(classes)}) are not those of the run it would continue "
                           f"({', '.join(saved['classes'])})")
    if saved.get("multi_label", False) != splits.multi_label:
        kinds = ("single-label", "multi-label")
        raise DatasetError(f"{data}: its labels are {kinds[splits.multi_label]} and the run it would continue "
                           f"trained {kinds[saved.get('multi_label', False)]}")
    model.load_state_dict(saved["state_dict"])
    optimizer.load_state_dict(saved["optimizer"])
    epoch, step, partial = saved["epoch"], saved["step"], saved.get("partial")
    schedule, saved_steps = saved["scheduler"], saved.get("epoch_steps", steps_per_epoch)
    if saved_steps != steps_per_epoch and step:  # another number of ranks: a step stands for other clips
        say(f"[yellow]warning[/] the run took {saved_steps} steps an epoch ({saved.get('world', 1)} processes) and now "
            f"takes {steps_per_epoch}: epoch {epoch + 1} starts again from its beginning")
        step, partial = 0, None
    if "lr_lambdas" not in schedule or saved_steps != steps_per_epoch:
        # Go on from the step reached, counted in this run's steps (the scheduler of an earlier vidclf
        # counted epochs; its "constant" schedule was a LambdaLR whose factor is always 1, harmless).
        schedule = {**scheduler.state_dict(), "last_epoch": epoch * steps_per_epoch + step}
    scheduler.load_state_dict(schedule)
    # The rate of the step reached, from this run's schedule: the same as saved when resuming as it
    # was, and over the new total when --epochs changed it (the saved rate belongs to the old one).
    for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)
    if saved.get("scaler"):
        scaler.load_state_dict(saved["scaler"])
    precision = str(dtype or torch.float32).removeprefix("torch.")
    if saved.get("precision", precision) != precision:  # --precision auto on another GPU, say
        say(f"[yellow]warning[/] the run trained in {saved['precision']} and continues in {precision}")
    return TrainState(epoch, step, saved["best_metric"], saved["history"], partial, saved.get("lr"),
                      saved.get("thresholds"))


def _wrap(model: torch.nn.Module, cfg: TrainConfig, device: torch.device, rank: distributed.Rank) -> torch.nn.Module:
    """DDP across ranks, then torch.compile when asked."""
    net = model
    if rank.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        # CUDA graphs on one GPU: T is padded to num_frames and lengths only gather, so shapes change
        # only with a short last batch (one more graph); 3.1x the eager ConvGRU step on an H100
        # (DESIGN.md). Not under DDP, where CUDA graphs and BatchNorm buffers are known not to mix.
        cuda_graphs = device.type == "cuda" and rank.world == 1
        net = torch.compile(net, mode="reduce-overhead" if cuda_graphs else None)
    return net


def _new_run_dir(cfg: TrainConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(cfg.out) / f"{cfg.arch}-{stamp}"
    n = 1
    while run_dir.exists():
        n += 1
        run_dir = Path(cfg.out) / f"{cfg.arch}-{stamp}-{n}"
    return run_dir
