"""What every command shares: the Typer app, common options, errors as one line, progress bars.

Heavy modules (torch, cv2, matplotlib) are imported inside the commands, so `vidclf --help` answers at once.
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
Clips = Annotated[int, typer.Option(min=1, help="Score each video by N clips spread evenly over it (at the training stride), "
                                                 "their probabilities averaged; 1: the centre clip.", rich_help_panel="Views")]
Crops = Annotated[int, typer.Option(min=1, max=3, help="1: the whole frame, as in training; 3: three crops along the longer "
                                                       "side of each clip.", rich_help_panel="Views")]
ReportOption = Annotated[ReportFormat, typer.Option("--format", "-f", help="table for people, json for scripts.")]
CacheDir = Annotated[Optional[str], typer.Option("--cache", help="Decode cache folder. [default: ~/.cache/vidclf/clips]")]
Checkpoint = Annotated[Optional[Path], typer.Option("--model", help="Checkpoint. [default: the newest best.pt under models/]")]


@contextlib.contextmanager
def errors(verbose: bool) -> Iterator[None]:
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
        if isinstance(err, OSError) and err.filename is not None and err.strerror:
            message = f"{err.filename}: {err.strerror}"  # not "[Errno 30] Read-only file system: 'models/x'"
        print(f"error: {message}", file=sys.stderr)
        raise typer.Exit(1)


def progress(quiet: bool):
    """A transient bar on stderr, only at a terminal."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from vidclf.output import stderr

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=stderr, transient=True, disable=quiet or not stderr.is_terminal)


def load_classifier(model: Optional[Path], device: str, quiet: bool):
    """The checkpoint asked for, or the newest best.pt under models/ (named on stderr); a warning when it
    was trained on frames from another decoder build than the one that will decode for it here."""
    from rich.markup import escape

    from vidclf import checkpoint
    from vidclf.data.provenance import decoder_change
    from vidclf.device import resolve_device
    from vidclf.output import stderr

    dev = resolve_device(device)
    path = model or checkpoint.newest_best("models")
    if model is None and not quiet:
        stderr.print(f"using {path}")
    clf = checkpoint.load_classifier(path, device=dev)
    if not quiet and (change := decoder_change(clf.decoder)):
        stderr.print(f"[yellow]warning[/] {escape(str(path))} was trained on frames from another decoder "
                     f"({escape(change)}); its accuracy on frames decoded here may differ", highlight=False)
    return clf, dev


Threshold = Annotated[Optional[float], typer.Option(
    min=0.0, max=1.0, help="Multi-label models: a label is present at this score or above, for every label. "
                           "[default: each label's threshold, chosen on the validation split]")]


def set_threshold(clf, threshold: Optional[float]) -> None:
    """--threshold for every label of a multi-label model; refused for one that picks a single class."""
    if threshold is None:
        return
    if not clf.multi_label:
        raise typer.BadParameter(f"{clf.path} is a single-label model (it picks one class a video)",
                                 param_hint="--threshold")
    clf.thresholds = [threshold] * len(clf.classes)
