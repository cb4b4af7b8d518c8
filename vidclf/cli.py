"""The `vidclf` command line: parse options, call the library, turn errors into one line and an exit code.

Heavy modules (torch, cv2) are imported inside the commands, so `vidclf --help` answers at once.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from enum import Enum
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer

app = typer.Typer(
    help="Train video classifiers from folders of clips, evaluate them, and label new videos.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class Format(str, Enum):
    table = "table"
    jsonl = "jsonl"
    json = "json"
    csv = "csv"


class ReportFormat(str, Enum):
    table = "table"
    json = "json"


Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or logs on stderr.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show full tracebacks on errors.")]
Device = Annotated[str, typer.Option(help="auto (CUDA when available), cpu, or cuda[:N].")]
Precision = Annotated[str, typer.Option(help="auto (bf16/fp16 on CUDA, fp32 on CPU), 32, bf16 or 16.")]
Workers = Annotated[Optional[int], typer.Option(help="Decoding processes. [default: the cores this process may use]")]
DecodeTimeout = Annotated[float, typer.Option(
    min=0, help="Abandon a video after this many seconds without a decoded frame (a stalled network mount); "
         "0 decodes in-process with no watchdog.")]

# Architecture options: None means "the architecture's default" and is not passed on.
Backbone = Annotated[Optional[str], typer.Option(help="cnn-lstm: small, resnet18 or mobilenet_v3_small.", rich_help_panel="Model")]
Pretrained = Annotated[Optional[str], typer.Option(help="cnn-lstm: 'imagenet' (torchvision weights) or a local state_dict file.", rich_help_panel="Model")]
FreezeBackbone = Annotated[bool, typer.Option(help="cnn-lstm: train only the recurrent part and the head.", rich_help_panel="Model")]
Rnn = Annotated[Optional[str], typer.Option(help="cnn-lstm: lstm, gru or rnn.", rich_help_panel="Model")]
HiddenSize = Annotated[Optional[int], typer.Option(help="cnn-lstm: recurrent hidden size.", rich_help_panel="Model")]
Layers = Annotated[Optional[int], typer.Option(help="cnn-lstm: stacked recurrent layers.", rich_help_panel="Model")]
Bidirectional = Annotated[bool, typer.Option(help="cnn-lstm: read the clip both ways.", rich_help_panel="Model")]
Dropout = Annotated[Optional[float], typer.Option(help="Dropout (cnn-lstm: between recurrent layers).", rich_help_panel="Model")]
HiddenChannels = Annotated[Optional[str], typer.Option(help="conv*: hidden channels per layer, e.g. 32,32.", rich_help_panel="Model")]
KernelSizes = Annotated[Optional[str], typer.Option(help="conv*: kernel size per layer, e.g. 3,3.", rich_help_panel="Model")]


def _ints(text: Optional[str], name: str) -> Optional[tuple[int, ...]]:
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers like 32,32, got {text!r}", param_hint=name)


# The train/summary flag that sets each architecture option (`vidclf models` shows them).
MODEL_FLAGS = {"backbone": "--backbone", "pretrained": "--pretrained", "freeze_backbone": "--freeze-backbone",
               "rnn": "--rnn", "hidden_size": "--hidden-size", "num_layers": "--layers",
               "bidirectional": "--bidirectional", "dropout": "--dropout", "hidden_channels": "--hidden-channels",
               "kernel_sizes": "--kernel-sizes", "in_channels": "--input"}


def _model_options(backbone, pretrained, freeze_backbone, rnn, hidden_size, layers, bidirectional, dropout,
                   hidden_channels, kernel_sizes) -> dict:
    options = {
        "backbone": backbone,
        "pretrained": pretrained,
        "freeze_backbone": True if freeze_backbone else None,
        "rnn": rnn,
        "hidden_size": hidden_size,
        "num_layers": layers,
        "bidirectional": True if bidirectional else None,
        "dropout": dropout,
        "hidden_channels": _ints(hidden_channels, "--hidden-channels"),
        "kernel_sizes": _ints(kernel_sizes, "--kernel-sizes"),
    }
    return {k: v for k, v in options.items() if v is not None}


@contextlib.contextmanager
def _errors(verbose: bool) -> Iterator[None]:
    """Library code raises; here an error becomes one line on stderr and exit code 1."""
    try:
        yield
    except (typer.Exit, typer.Abort, typer.BadParameter, SystemExit):
        raise
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise typer.Exit(130)
    except BrokenPipeError:
        # The reader of stdout (`| head`, say) has what it wanted: not an error. Point stdout at
        # /dev/null so that Python's final flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(0)
    except Exception as err:
        if verbose:
            traceback.print_exc()
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        raise typer.Exit(1)


def _progress(quiet: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from vidclf.output import stderr

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=stderr, transient=True, disable=quiet or not stderr.is_terminal)


@app.command()
def synth(
    folder: Annotated[Path, typer.Argument(help="Where to write <class>/<clip>.mp4.")] = Path("data"),
    task: Annotated[str, typer.Option(help="motion (direction/rotation classes) or speed (1× vs fast).")] = "motion",
    classes: Annotated[Optional[int], typer.Option(help="Use only the first N classes of the task.")] = None,
    clips_per_class: Annotated[int, typer.Option(help="Clips written per class.")] = 40,
    frames: Annotated[int, typer.Option(help="Frames per clip.")] = 16,
    size: Annotated[int, typer.Option(help="Frame width and height in pixels.")] = 64,
    seed: Annotated[int, typer.Option(help="Same seed, same videos.")] = 0,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Write the embedded dataset: clips whose classes differ only in how things move."""
    with _errors(verbose):
        from vidclf.output import stderr
        from vidclf.synth import write_dataset

        written = write_dataset(folder, task=task, classes=classes, clips_per_class=clips_per_class,
                                frames=frames, size=size, seed=seed)
        if not quiet:
            stderr.print(f"wrote {len(written)} clips to {folder}")


@app.command()
def check(
    paths: Annotated[Optional[list[Path]], typer.Argument(help="Dataset folders or video files. [default: data]")] = None,
    format: Annotated[ReportFormat, typer.Option("--format", "-f", help="table for people, json for scripts.")] = ReportFormat.table,
    deep: Annotated[bool, typer.Option(help="Decode every frame: also find files that end early or whose header lies.")] = False,
    workers: Workers = None,
    decode_timeout: DecodeTimeout = 60.0,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Scan videos: clips, duration and frame sizes per class, every unreadable file and, with --deep,
    every suspect one (exit 1 if any)."""
    with _errors(verbose):
        import json

        from rich.table import Table

        from vidclf.check import check_videos
        from vidclf.output import stderr, stdout
        from vidclf.train import default_workers

        with _progress(quiet) as progress:
            task = progress.add_task("checking", total=None)
            report = check_videos(paths or [Path("data")], workers=workers or default_workers() or 1, deep=deep,
                                  decode_timeout=decode_timeout or None, progress=lambda _: progress.advance(task))
        if format is ReportFormat.json:
            print(json.dumps(report, ensure_ascii=False, indent=2))
        else:
            table = Table(title=f"{report['num_clips']} readable clips")
            for name in ("class", "clips", "duration (s)", "smallest", "largest"):
                table.add_column(name, justify="left" if name == "class" else "right")
            for row in report["classes"]:
                table.add_row(row["class"], str(row["clips"]), f"{row['duration']:.1f}",
                              "×".join(map(str, row["min_size"])), "×".join(map(str, row["max_size"])))
            stdout.print(table)
            for failure in report["failed"]:
                stderr.print(f"[red]unreadable[/] {failure['error']}", highlight=False)
            for suspect in report["suspect"]:
                stderr.print(f"[yellow]suspect[/] {suspect['problem']}", highlight=False)
        if report["failed"] or report["suspect"]:
            raise typer.Exit(1)


@app.command("models")
def list_models(
    format: Annotated[ReportFormat, typer.Option("--format", "-f")] = ReportFormat.table,
    verbose: Verbose = False,
) -> None:
    """List the architectures with their options and defaults."""
    with _errors(verbose):
        import json

        from rich.table import Table

        from vidclf.models import MODELS, model_options
        from vidclf.output import stdout

        listing = {name: [{"option": o[0], "flag": MODEL_FLAGS.get(o[0]), "type": o[1], "default": o[2],
                           "help": o[3]} for o in model_options(name)] for name in MODELS}
        if format is ReportFormat.json:
            print(json.dumps(listing, indent=2, default=str))
            return
        for name, options in listing.items():
            table = Table(title=name, title_justify="left")
            for col in ("option", "flag", "type", "default", "help"):
                table.add_column(col)
            for o in options:
                table.add_row(o["option"], o["flag"] or "(Python API only)", str(o["type"]), repr(o["default"]),
                              o["help"])
            stdout.print(table)


@app.command()
def summary(
    arch: Annotated[str, typer.Option(help="Architecture (see `vidclf models`).")] = "cnn-lstm",
    frames: Annotated[int, typer.Option(help="Frames per clip (T).")] = 16,
    size: Annotated[int, typer.Option(help="Frame height and width.")] = 64,
    input: Annotated[str, typer.Option(help="rgb, diff or rgb+diff (6 input channels).")] = "rgb+diff",
    classes: Annotated[int, typer.Option(help="Number of classes of the head.")] = 6,
    backbone: Backbone = None, pretrained: Pretrained = None, freeze_backbone: FreezeBackbone = False,
    rnn: Rnn = None, hidden_size: HiddenSize = None, layers: Layers = None, bidirectional: Bidirectional = False,
    dropout: Dropout = None, hidden_channels: HiddenChannels = None, kernel_sizes: KernelSizes = None,
    verbose: Verbose = False,
) -> None:
    """Each block's output shape and parameters for one clip, totals, and forward GFLOPs per clip."""
    with _errors(verbose):
        from vidclf.models import build_model
        from vidclf.output import stdout
        from vidclf.preprocess import in_channels
        from vidclf.summary import summarize, summary_table

        options = _model_options(backbone, pretrained, freeze_backbone, rnn, hidden_size, layers, bidirectional,
                                 dropout, hidden_channels, kernel_sizes)
        channels = in_channels(input)
        model = build_model(arch, classes, in_channels=channels, **options)
        stdout.print(summary_table(summarize(model, (frames, channels, size, size))))


@app.command()
def train(
    data: Annotated[str, typer.Option(help="Dataset folder (class folders or train/val/test) or a CSV manifest.")] = "data",
    arch: Annotated[str, typer.Option(help="Architecture (see `vidclf models`).")] = "cnn-lstm",
    backbone: Backbone = None, pretrained: Pretrained = None, freeze_backbone: FreezeBackbone = False,
    rnn: Rnn = None, hidden_size: HiddenSize = None, layers: Layers = None, bidirectional: Bidirectional = False,
    dropout: Dropout = None, hidden_channels: HiddenChannels = None, kernel_sizes: KernelSizes = None,
    frames: Annotated[int, typer.Option(help="Frames per clip.")] = 16,
    size: Annotated[int, typer.Option(help="Frames are resized to SIZE×SIZE.")] = 64,
    frame_stride: Annotated[int, typer.Option(help="Gap between the frames of a random training clip.")] = 1,
    input: Annotated[str, typer.Option(help="rgb, diff (x_t − x_(t−1)) or rgb+diff (both: see README).")] = "rgb+diff",
    batch_size: Annotated[int, typer.Option(help="Clips per step.")] = 16,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs to train (with --resume: the new total). [default: 10]")] = None,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-3,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 1e-4,
    schedule: Annotated[str, typer.Option(help="cosine, step or constant.")] = "cosine",
    val_split: Annotated[float, typer.Option(help="Fraction of each class held out when there is no val/ folder.")] = 0.2,
    patience: Annotated[Optional[int], typer.Option(help="Stop after N epochs without a better --monitor.")] = None,
    monitor: Annotated[str, typer.Option(help="val_acc or val_loss: what the best checkpoint is best at.")] = "val_acc",
    hflip: Annotated[bool, typer.Option(help="Random horizontal flips (they turn 'left' into 'right').")] = False,
    seed: Annotated[int, typer.Option(help="Seeds data order, sampling, augmentation and weights.")] = 0,
    workers: Workers = None,
    device: Device = "auto",
    precision: Precision = "auto",
    cache: Annotated[Optional[str], typer.Option(help="Decode cache folder. [default: ~/.cache/vidclf/clips]")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Decode every clip every epoch.")] = False,
    cache_size: Annotated[str, typer.Option(help="Bound on the cache's disk use (500MB, 20GB); least recently used entries go.")] = "20GB",
    decode_timeout: DecodeTimeout = 60.0,
    compile: Annotated[bool, typer.Option(help="torch.compile the model (slow start; pays off on GPUs).")] = False,
    out: Annotated[str, typer.Option(help="Run folders (checkpoints, metrics.csv) go under here.")] = "models",
    resume: Annotated[Optional[Path], typer.Option(help="Continue the run of this last.pt (its settings are kept).")] = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Train a classifier; writes best.pt, last.pt and metrics.csv to a new run folder under --out."""
    with _errors(verbose):
        from vidclf.output import stderr
        from vidclf.train import StopSignal, TrainConfig, fit, resume_config

        cache_dir = None if no_cache else (cache or "")
        if resume is not None:
            cfg = resume_config(resume, epochs=epochs, device=device, precision=precision, workers=workers,
                                cache_size=cache_size, decode_timeout=decode_timeout)
        else:
            cfg = TrainConfig(
                data=data, arch=arch,
                model=_model_options(backbone, pretrained, freeze_backbone, rnn, hidden_size, layers,
                                     bidirectional, dropout, hidden_channels, kernel_sizes),
                num_frames=frames, size=size, frame_stride=frame_stride, input=input, batch_size=batch_size,
                epochs=10 if epochs is None else epochs, lr=lr, weight_decay=weight_decay, schedule=schedule,
                val_split=val_split, seed=seed, hflip=hflip, patience=patience, monitor=monitor, workers=workers,
                device=device, precision=precision, cache=cache_dir, cache_size=cache_size,
                decode_timeout=decode_timeout, compile=compile, out=out,
            )
        stop = StopSignal()
        stop.install()
        console = stderr if not quiet else type(stderr)(stderr=True, quiet=True)
        result = fit(cfg, console=console, show_progress=not quiet, stop=stop, resume=resume)
        if result.interrupted:
            raise typer.Exit(130)


@app.command()
def evaluate(
    model: Annotated[Optional[Path], typer.Option(help="Checkpoint. [default: the newest best.pt under models/]")] = None,
    data: Annotated[Optional[str], typer.Option(help="Dataset folder or CSV manifest. [default: the one the model was trained on]")] = None,
    manifest: Annotated[Optional[Path], typer.Option(help="A CSV manifest path,label[,split] (same as --data FILE.csv).")] = None,
    split: Annotated[str, typer.Option(help="val, test, train or all.")] = "val",
    top_k: Annotated[int, typer.Option(help="k of the top-k accuracy.")] = 5,
    format: Annotated[ReportFormat, typer.Option("--format", "-f")] = ReportFormat.table,
    plot: Annotated[Optional[Path], typer.Option(help="Save the confusion matrix as a PNG image.")] = None,
    batch_size: Annotated[int, typer.Option(help="Clips per batch.")] = 16,
    workers: Workers = None,
    decode_timeout: DecodeTimeout = 60.0,
    device: Device = "auto",
    precision: Precision = "auto",
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Accuracy, top-k, per-class precision/recall/F1 and the confusion matrix of a trained model."""
    with _errors(verbose):
        import json

        from rich.table import Table

        from vidclf import checkpoint
        from vidclf.datasets import ClipDataset, Sample, clip_loader, scan
        from vidclf.decoder import Decoder
        from vidclf.device import autocast_dtype, resolve_device
        from vidclf.evaluate import evaluate as run_evaluation, save_confusion_plot
        from vidclf.output import stderr, stdout
        from vidclf.train import default_workers

        dev = resolve_device(device)
        path = model or checkpoint.newest_best("models")
        if model is None and not quiet:
            stderr.print(f"using {path}")
        clf = checkpoint.load_classifier(path, device=dev)
        trained = checkpoint.load(path).get("train_config", {})
        source = str(manifest) if manifest else data or trained.get("data", "data")
        splits = scan(source, val_split=trained.get("val_split", 0.2), seed=trained.get("seed", 0))
        if split not in ("train", "val", "test", "all"):
            raise typer.BadParameter("should be val, test, train or all", param_hint="--split")
        chosen = splits.train + splits.val + splits.test if split == "all" else getattr(splits, split)
        if not chosen:
            raise ValueError(f"{source}: the {split} split is empty")
        unknown = sorted(set(splits.classes) - set(clf.classes))
        if unknown:
            raise ValueError(f"{source}: classes the model does not know: {', '.join(unknown)}")
        samples = [Sample(p, clf.classes.index(splits.classes[label])) for p, label in chosen]
        n_workers = default_workers() if workers is None else workers
        dataset = ClipDataset(samples, clf.preprocess, decoder=Decoder(decode_timeout or None))
        loader = clip_loader(dataset, batch_size=batch_size, workers=n_workers,
                             device=dev, pad_to=clf.preprocess.num_frames)
        with _progress(quiet) as progress:
            task = progress.add_task(f"evaluating {split}", total=len(samples))
            report = run_evaluation(clf.model, loader, pre=clf.preprocess, classes=clf.classes, device=dev,
                                    dtype=autocast_dtype(dev, precision), k=top_k,
                                    progress=lambda n: progress.advance(task, n))
        if plot is not None:
            save_confusion_plot(report["confusion_matrix"], clf.classes, str(plot))
        if format is ReportFormat.json:
            print(json.dumps(report, ensure_ascii=False, indent=2))
        else:
            k = next(iter(report["top_k_accuracy"]))
            stdout.print(f"[bold]{report['num_clips']} clips[/]  accuracy {report['accuracy']:.4f}  "
                         f"top-{k} {report['top_k_accuracy'][k]:.4f}  mean class accuracy "
                         f"{report['mean_class_accuracy']:.4f}")
            per_class = Table(title="per class")
            for col in ("class", "precision", "recall", "f1", "support"):
                per_class.add_column(col, justify="left" if col == "class" else "right")
            for row in report["per_class"]:
                per_class.add_row(row["class"], f"{row['precision']:.3f}", f"{row['recall']:.3f}",
                                  f"{row['f1']:.3f}", str(row["support"]))
            stdout.print(per_class)
            confusion = Table(title="confusion (rows: true, columns: predicted)")
            confusion.add_column("")
            for c in clf.classes:
                confusion.add_column(c, justify="right")
            for c, row in zip(clf.classes, report["confusion_matrix"]):
                confusion.add_row(c, *map(str, row))
            stdout.print(confusion)
        for failure in report["failed"]:
            stderr.print(f"[red]unreadable[/] {failure['error']}", highlight=False)
        if report["failed"]:
            raise typer.Exit(1)


@app.command()
def predict(
    inputs: Annotated[list[str], typer.Argument(help="Video files, folders (searched recursively), or - to read paths from stdin.")],
    model: Annotated[Optional[Path], typer.Option(help="Checkpoint. [default: the newest best.pt under models/]")] = None,
    top_k: Annotated[int, typer.Option(help="Labels listed per video.")] = 3,
    format: Annotated[Optional[Format], typer.Option("--format", "-f", help="[default: table on a terminal, jsonl in a pipe]")] = None,
    window: Annotated[Optional[float], typer.Option(help="Also label each window of this many seconds.")] = None,
    stride: Annotated[Optional[float], typer.Option(help="Seconds between window starts. [default: --window]")] = None,
    shard: Annotated[Optional[str], typer.Option(help="I/N: only every N-th input from the I-th, for array jobs.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Append each record to this jsonl file as it completes (not stdout).")] = None,
    resume: Annotated[bool, typer.Option(help="With --output: skip inputs the file already holds a result for; retry the rest.")] = False,
    batch_size: Annotated[int, typer.Option(help="Clips per batch.")] = 16,
    workers: Workers = None,
    decode_timeout: DecodeTimeout = 60.0,
    device: Device = "auto",
    precision: Precision = "auto",
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Label videos: one record per video on stdout (or --output); exit code 1 if any could not be read."""
    with _errors(verbose):
        from vidclf import checkpoint
        from vidclf.decoder import Decoder
        from vidclf.device import autocast_dtype, resolve_device
        from vidclf.output import default_format, emit, stderr
        from vidclf.predict import expand_inputs, predict_files, predict_windows, resume_output, shard as take_shard
        from vidclf.train import default_workers

        if resume and output is None:
            raise typer.BadParameter("needs --output FILE, the file to resume", param_hint="--resume")
        paths = take_shard(expand_inputs(inputs, sys.stdin if "-" in inputs else ()), shard)
        if resume:
            done = resume_output(output)
            if not quiet and done:
                stderr.print(f"{output}: {len(done)} inputs already done")
            paths = [p for p in paths if p not in done]
        dev = resolve_device(device)
        path = model or checkpoint.newest_best("models")
        if model is None and not quiet:
            stderr.print(f"using {path}")
        clf = checkpoint.load_classifier(path, device=dev)
        dtype = autocast_dtype(dev, precision)
        decoder = Decoder(decode_timeout or None)
        fmt = "jsonl" if output else (format.value if format else default_format())
        failed = 0

        def records():
            nonlocal failed
            with _progress(quiet) as progress:
                task = progress.add_task("predicting", total=len(paths))
                if window is not None:
                    stream = (predict_windows(p, clf, device=dev, dtype=dtype, window=window, stride=stride,
                                              batch_size=batch_size, top_k=top_k, decoder=decoder) for p in paths)
                else:
                    n_workers = workers
                    if n_workers is None:  # fewer files than cores: decode here, threaded by OpenCV
                        cores = default_workers()
                        n_workers = 0 if len(paths) < cores else cores
                    stream = predict_files(paths, clf, device=dev, dtype=dtype, batch_size=batch_size,
                                           workers=n_workers, top_k=top_k, decoder=decoder)
                for record in stream:
                    failed += record["error"] is not None
                    progress.advance(task)
                    yield record

        def table_row(r: dict) -> list[str]:
            topk = ", ".join(f"{t['label']} {t['score']:.2f}" for t in r["topk"])
            score = "" if r["score"] is None else f"{r['score']:.3f}"
            return [r["path"], r["label"] or "", score, topk, r["error"] or ""]

        with open(output, "a" if resume else "w", encoding="utf-8") if output else contextlib.nullcontext() as file:
            emit(records(), fmt, columns=["path", "label", "score", "topk", "error"], table_row=table_row, file=file)
        if failed:
            if not quiet:
                stderr.print(f"{failed} of {len(paths)} videos could not be read")
            raise typer.Exit(1)
