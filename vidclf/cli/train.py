"""`vidclf train`: options to a TrainConfig, then the fit loop; Ctrl-C exits 130 after saving last.pt."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vidclf.cli.common import CacheDir, DecodeTimeout, Device, Precision, Quiet, Verbose, Workers, app, errors
from vidclf.cli.models import (Backbone, Bidirectional, Dropout, FreezeBackbone, HiddenChannels, HiddenSize,
                               KernelSizes, Layers, Pretrained, Rnn, model_options)

MODEL_PARAMS = ("backbone", "pretrained", "freeze_backbone", "rnn", "hidden_size", "layers", "bidirectional",
                "dropout", "hidden_channels", "kernel_sizes")
RENAMED = {"frames": "num_frames"}  # option name → TrainConfig field, where they differ
MONITOR_NAMES = {"mAP": "val_map", "map": "val_map"}  # --monitor as people write it → the metric's row key


@app.command()
def train(
    data: Annotated[str, typer.Option(help="Dataset folder (class folders or train/val/test) or a CSV manifest "
                                           "(path,labels[,split]; labels ;-separated make it multi-label).")] = "data",
    multi_label: Annotated[bool, typer.Option("--multi-label", help="A sigmoid per label (any set of labels a clip, "
                                              "thresholds per label) even when every clip has one label.")] = False,
    arch: Annotated[Optional[str], typer.Option(help="Architecture (see `vidclf models`). [default: cnn-lstm, or --init's]")] = None,
    backbone: Backbone = None, pretrained: Pretrained = None, freeze_backbone: FreezeBackbone = False,
    rnn: Rnn = None, hidden_size: HiddenSize = None, layers: Layers = None, bidirectional: Bidirectional = False,
    dropout: Dropout = None, hidden_channels: HiddenChannels = None, kernel_sizes: KernelSizes = None,
    frames: Annotated[Optional[int], typer.Option(help="Frames per clip. [default: 16, or what --init's or --pretrained's weights were trained with]")] = None,
    size: Annotated[Optional[int], typer.Option(help="Frames are resized to SIZE×SIZE. [default: 64, or what --init's or --pretrained's weights were trained with]")] = None,
    frame_stride: Annotated[int, typer.Option(help="Gap between the frames of a random training clip.")] = 1,
    input: Annotated[Optional[str], typer.Option(help="rgb, diff (x_t − x_(t−1)) or rgb+diff (both: see README). [default: rgb+diff, or --init's]")] = None,
    init: Annotated[Optional[Path], typer.Option(help="Start from this vidclf checkpoint's weights (fine-tuning): its architecture and input; "
                                                      "a new head when the classes differ.", rich_help_panel="Model")] = None,
    backbone_lr: Annotated[float, typer.Option(help="Everything but the head trains at --lr × this (e.g. 0.1 for pretrained or --init weights).",
                                               rich_help_panel="Model")] = 1.0,
    batch_size: Annotated[int, typer.Option(help="Clips per step.")] = 16,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs to train (with --resume: the new total, over which the schedule then runs). [default: 10]")] = None,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-3,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 1e-4,
    schedule: Annotated[str, typer.Option(help="cosine, step or constant: the rate's decay, epoch by epoch.")] = "cosine",
    warmup: Annotated[float, typer.Option(help="Epochs over which the rate rises linearly (step by step) to --lr.")] = 0.0,
    label_smoothing: Annotated[float, typer.Option(help="Weight of the uniform target in the training loss.")] = 0.0,
    mix: Annotated[str, typer.Option(help="none, mixup or cutmix: blend pairs of training clips and their labels.")] = "none",
    mix_alpha: Annotated[float, typer.Option(help="Mixing weights are drawn from Beta(α, α).")] = 0.2,
    val_split: Annotated[float, typer.Option(help="Fraction of each class held out when there is no val/ folder.")] = 0.2,
    patience: Annotated[Optional[int], typer.Option(help="Stop after N epochs without a better --monitor.")] = None,
    monitor: Annotated[str, typer.Option(help="val_acc, val_class_acc (mean per-class accuracy), mAP (multi-label) or val_loss: "
                                              "what the best checkpoint is best at. Multi-label: val_acc is the share of exactly right label sets.")] = "val_acc",
    balance: Annotated[str, typer.Option(help="none, sampler (each epoch draws every class equally often) or weights "
                                              "(loss weights by inverse class frequency): for imbalanced classes.")] = "none",
    hflip: Annotated[bool, typer.Option(help="Random horizontal flips (they turn 'left' into 'right').")] = False,
    seed: Annotated[int, typer.Option(help="Seeds data order, sampling, augmentation and weights.")] = 0,
    workers: Workers = None,
    device: Device = "auto",
    precision: Precision = "auto",
    cache: CacheDir = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Decode every clip every epoch.")] = False,
    cache_size: Annotated[str, typer.Option(help="Bound on the cache's disk use (500MB, 20GB): other datasets' entries make room first; "
                                                 "videos of this run that do not fit are decoded a clip at a time.")] = "20GB",
    decode_timeout: DecodeTimeout = 60.0,
    compile: Annotated[bool, typer.Option(help="torch.compile the model (slow start; pays off on GPUs).")] = False,
    out: Annotated[str, typer.Option(help="Run folders (checkpoints, metrics.csv, curves.png) go under here.")] = "models",
    name: Annotated[Optional[str], typer.Option(help="Name the run folder (--out/NAME): the same command continues the run from its "
                                                     "last.pt after a stop, a crash or a requeue, and starts it when there is none.")] = None,
    save_every: Annotated[float, typer.Option(help="Minutes between writes of last.pt within an epoch (bounds the work a kill loses; 0: only at epoch ends).")] = 10.0,
    resume: Annotated[Optional[Path], typer.Option(help="Continue the run of this last.pt (its settings are kept).")] = None,
    tensorboard: Annotated[bool, typer.Option(help="Write TensorBoard curves into the run folder (pip install 'vidclf[tensorboard]').")] = False,
    online: Annotated[bool, typer.Option(help="Train for live streams: clips joined end to end, a label for every frame, truncated "
                                              "backpropagation; `stream` then makes one recurrent step per frame.", rich_help_panel="Streams")] = False,
    sequence_clips: Annotated[int, typer.Option(help="--online: clips joined into one training sequence (--batch-size counts sequences).",
                                                rich_help_panel="Streams")] = 8,
    chunk: Annotated[int, typer.Option(help="--online: frames per chunk of truncated backpropagation; the state is carried across.",
                                       rich_help_panel="Streams")] = 16,
    grace: Annotated[int, typer.Option(help="--online: frames after a change of label left out of the loss.",
                                       rich_help_panel="Streams")] = 0,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Train a classifier; writes best.pt, last.pt, metrics.csv and curves.png to a run folder under --out.

    Exit codes: 0 trained (or had already trained) all epochs; 1 an error; 2 a wrong option;
    130 stopped by Ctrl-C or SIGTERM after writing last.pt (the same command with --name, or --resume, continues).
    """
    options = dict(locals())
    with errors(verbose):
        from vidclf.output import stderr
        from vidclf.train import StopSignal, fit

        console = stderr if not quiet else type(stderr)(stderr=True, quiet=True)
        if resume is not None and name is not None:
            raise typer.BadParameter("give --name or --resume, not both", param_hint="--name")
        run_dir, hint = None, None
        if resume is not None:  # the saved run's settings, but where and how long to run it now
            from vidclf.resume import resume_config

            cfg = resume_config(resume, epochs=epochs, device=device, precision=precision, workers=workers,
                                cache_size=cache_size, decode_timeout=decode_timeout, save_every=save_every,
                                tensorboard=tensorboard)
        else:
            cfg = _new_config(options, say=console.print)
        if name is not None:
            run_dir, hint = Path(out) / name, "the same command"
            cfg, resume = _continued(cfg, run_dir / "last.pt", console)
        stop = StopSignal()
        with stop.installed():
            result = fit(cfg, console=console, show_progress=not quiet, stop=stop, resume=resume, run_dir=run_dir,
                         continue_with=hint)
        if result.interrupted:
            raise typer.Exit(130)


def _continued(asked, last: Path, console):
    """The configuration and last.pt that continue a named run, or `asked` and None when it has not started."""
    if not last.exists():
        return asked, None
    from rich.markup import escape

    from vidclf import distributed
    from vidclf.resume import continue_config

    cfg, warning = continue_config(last, asked)
    if distributed.launched_as_main():
        console.print(f"continuing the run in {last.parent}")
        if warning:
            console.print(f"[yellow]warning[/] {escape(warning)}", highlight=False)
    return cfg, last


def _new_config(options: dict, say):
    """The TrainConfig of these options: most are its fields by the same name; the architecture, input
    and frames follow where the weights start (start.resolve)."""
    from dataclasses import asdict, fields

    from vidclf import distributed
    from vidclf.start import resolve
    from vidclf.train import TrainConfig

    known = {f.name for f in fields(TrainConfig)}
    values = {RENAMED.get(k, k): v for k, v in options.items() if RENAMED.get(k, k) in known}
    if values.get("monitor") in MONITOR_NAMES:
        values["monitor"] = MONITOR_NAMES[values["monitor"]]
    shape = resolve(arch=options["arch"], model=model_options(*(options[k] for k in MODEL_PARAMS)),
                    init=None if options["init"] is None else str(options["init"]), num_frames=options["frames"],
                    size=options["size"], input=options["input"], say=say if distributed.launched_as_main() else _quiet)
    values.update(
        asdict(shape),
        init=None if options["init"] is None else str(options["init"]),
        cache=None if options["no_cache"] else (options["cache"] or ""),
        epochs=10 if options["epochs"] is None else options["epochs"],
    )
    return TrainConfig(**values)


def _quiet(*args, **kwargs) -> None:
    pass
