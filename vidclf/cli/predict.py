"""`vidclf predict` and `vidclf embed`: records for pipes and batch jobs (stdout or an --output file),
logs on stderr; exit code 1 when some input could not be read.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer

from vidclf.cli.common import (Checkpoint, Clips, Crops, DecodeTimeout, Device, Format, Precision, Quiet, Threshold,
                               Verbose, app, errors, load_classifier, progress, set_threshold)

COLUMNS = ["path", "label", "score", "topk", "error"]
MULTI_LABEL_COLUMNS = ["path", "labels", "label", "score", "topk", "error"]  # labels: every label present
Inputs = Annotated[list[str], typer.Argument(help="Video files, folders (searched recursively), or - to read paths from stdin.")]
Shard = Annotated[Optional[str], typer.Option(help="I/N: only every N-th input from the I-th, for array jobs.")]
Output = Annotated[Optional[Path], typer.Option("--output", "-o", help="Append each record to this file as it completes (not stdout).")]
Resume = Annotated[bool, typer.Option(help="With --output: skip inputs the file already holds a result for; retry the rest.")]
BatchSize = Annotated[int, typer.Option(help="Clips per batch.")]
Lanes = Annotated[Optional[int], typer.Option("--workers", help=(
    "Lanes: each decodes a batch in a process of its own, then runs the model on it with its share of the cores. "
    "0: one lane, OpenCV's own threads decoding. [default: one a core; 0 for fewer files than cores]"))]


@app.command()
def predict(
    inputs: Inputs,
    model: Checkpoint = None,
    top_k: Annotated[int, typer.Option(help="Labels listed per video.")] = 3,
    format: Annotated[Optional[Format], typer.Option("--format", "-f", help="[default: table on a terminal, jsonl in a pipe]")] = None,
    window: Annotated[Optional[float], typer.Option(help="Also label each window of this many seconds.")] = None,
    stride: Annotated[Optional[float], typer.Option(help="Seconds between window starts. [default: --window]")] = None,
    timeline: Annotated[bool, typer.Option(help="Label every frame: a timeline of segments (start, end, label, score) per video; one "
                                                "recurrent step a frame for checkpoints trained --online, else the clip ending at each frame.")] = False,
    min_segment: Annotated[float, typer.Option(min=0.0, help="--timeline: a label shorter than this many seconds keeps the one before it.")] = 0.0,
    clips: Clips = 3, crops: Crops = 1, threshold: Threshold = None,
    shard: Shard = None, output: Output = None, resume: Resume = False, batch_size: BatchSize = 16,
    workers: Lanes = None, decode_timeout: DecodeTimeout = 60.0, device: Device = "auto",
    precision: Precision = "auto", quiet: Quiet = False, verbose: Verbose = False,
) -> None:
    """Label videos: one record per video on stdout (or --output); exit code 1 if any could not be read.
    A multi-label model's records also list every label present (labels), each at or above its threshold."""
    with errors(verbose):
        from vidclf.data.decoder import Decoder
        from vidclf.device import autocast_dtype
        from vidclf.output import default_format
        from vidclf.predict import predict as predict_records

        paths = _pending(inputs, shard, output, resume, quiet)
        clf, dev = load_classifier(model, device, quiet)
        set_threshold(clf, threshold)
        if timeline:
            records = _timeline(paths, clf, dev, autocast_dtype(dev, precision), top_k, window, min_segment)
        else:
            records = predict_records(paths, clf, device=dev, dtype=autocast_dtype(dev, precision), batch_size=batch_size,
                                      workers=workers, top_k=top_k, decoder=Decoder(decode_timeout or None),
                                      window=window, stride=stride, views=(clips, crops))
        fmt = "jsonl" if output else (format.value if format else default_format())
        _write(records, len(paths), fmt, output, resume, quiet, multi_label=clf.multi_label)


@app.command()
def embed(
    inputs: Inputs,
    model: Checkpoint = None,
    format: Annotated[str, typer.Option("--format", "-f", help="jsonl (path, embedding, error), or npy: an (N, D) float32 "
                                        "array in --output and the paths of its rows in OUTPUT.paths.txt.")] = "jsonl",
    clips: Clips = 3, crops: Crops = 1,
    shard: Shard = None, output: Output = None, resume: Resume = False, batch_size: BatchSize = 16,
    workers: Lanes = None, decode_timeout: DecodeTimeout = 60.0, device: Device = "auto",
    precision: Precision = "auto", quiet: Quiet = False, verbose: Verbose = False,
) -> None:
    """One vector per video (the model's features before its head), to search, cluster or feed another model."""
    with errors(verbose):
        from vidclf.data.decoder import Decoder
        from vidclf.device import autocast_dtype
        from vidclf.predict import embed_files

        if format not in ("jsonl", "npy"):
            raise typer.BadParameter(f"should be jsonl or npy, got {format!r}", param_hint="--format")
        if format == "npy" and (output is None or resume):
            raise typer.BadParameter("npy needs --output FILE.npy (and cannot --resume)", param_hint="--format")
        paths = _pending(inputs, shard, output, resume, quiet)
        clf, dev = load_classifier(model, device, quiet)
        records = embed_files(paths, clf, device=dev, dtype=autocast_dtype(dev, precision), batch_size=batch_size,
                              workers=workers, decoder=Decoder(decode_timeout or None), views=(clips, crops))
        _write(records, len(paths), format, output, resume, quiet)


def _timeline(paths, clf, device, dtype, top_k: int, window: Optional[float], min_segment: float):
    from vidclf.timeline import timeline_records

    if window is not None:
        raise typer.BadParameter("give --timeline or --window, not both", param_hint="--timeline")
    return timeline_records(paths, clf, device=device, dtype=dtype, top_k=top_k, min_segment_s=min_segment)


def _pending(inputs: list[str], shard: Optional[str], output: Optional[Path], resume: bool, quiet: bool) -> list[str]:
    """The inputs this run should do: expanded, sharded, and without those --resume finds done."""
    from vidclf.output import stderr
    from vidclf.predict import expand_inputs, resume_output
    from vidclf.data.files import shard as take_shard

    if resume and output is None:
        raise typer.BadParameter("needs --output FILE, the file to resume", param_hint="--resume")
    paths = take_shard(expand_inputs(inputs, sys.stdin if "-" in inputs else ()), shard)
    if not resume:
        return paths
    done = resume_output(output)
    if not quiet and done:
        stderr.print(f"{output}: {len(done)} inputs already done")
    return [p for p in paths if p not in done]


def _write(records: Iterator[dict], total: int, fmt: str, output: Optional[Path], resume: bool, quiet: bool, *,
           multi_label: bool = False) -> None:
    """Records to stdout or appended to --output as each completes; exit 1 if an input failed. A multi-label
    model's table shows the labels present and its CSV writes them `;`-separated."""
    from vidclf.output import emit, stderr
    from vidclf.predict import save_npy

    failed: list[str] = []
    counted = _counted(records, total, failed, quiet)
    if fmt == "npy":
        save_npy(counted, output)
    else:
        if multi_label and fmt == "csv":
            counted = ({**r, "labels": ";".join(x["label"] for x in r["labels"])} for r in counted)
        with open(output, "a" if resume else "w", encoding="utf-8") if output else contextlib.nullcontext() as file:
            emit(counted, fmt, columns=MULTI_LABEL_COLUMNS if multi_label else COLUMNS,
                 table_row=_multi_label_row if multi_label else _table_row, file=file)
    if failed:
        if not quiet:
            stderr.print(f"{len(failed)} of {total} videos could not be read")
        raise typer.Exit(1)


def _counted(records: Iterator[dict], total: int, failed: list[str], quiet: bool) -> Iterator[dict]:
    """The records, advancing the progress bar and noting the inputs that failed."""
    with progress(quiet) as bar:
        task = bar.add_task("working", total=total)
        for record in records:
            if record["error"] is not None:
                failed.append(record["path"])
            bar.advance(task)
            yield record


def _table_row(r: dict) -> list[str]:
    topk = ", ".join(f"{t['label']} {t['score']:.2f}" for t in r["topk"])
    score = "" if r["score"] is None else f"{r['score']:.3f}"
    return [r["path"], r["label"] or "", score, topk, r["error"] or ""]


def _multi_label_row(r: dict) -> list[str]:
    labels = ", ".join(f"{x['label']} {x['score']:.2f}" for x in r["labels"])
    return [r["path"], labels if r["error"] is None else "", *_table_row(r)[1:]]
