"""`vidclf predict`: records for pipes and batch jobs (stdout or an --output file), logs on stderr."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer

from vidclf.cli.common import (Checkpoint, DecodeTimeout, Device, Format, Precision, Quiet, Verbose, Workers, app,
                               errors, load_classifier, progress)

COLUMNS = ["path", "label", "score", "topk", "error"]


@app.command()
def predict(
    inputs: Annotated[list[str], typer.Argument(help="Video files, folders (searched recursively), or - to read paths from stdin.")],
    model: Checkpoint = None,
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
    with errors(verbose):
        from vidclf.decoder import Decoder
        from vidclf.device import autocast_dtype
        from vidclf.output import default_format, emit, stderr
        from vidclf.predict import expand_inputs, predict as predict_records, resume_output, shard as take_shard

        if resume and output is None:
            raise typer.BadParameter("needs --output FILE, the file to resume", param_hint="--resume")
        paths = take_shard(expand_inputs(inputs, sys.stdin if "-" in inputs else ()), shard)
        if resume:
            done = resume_output(output)
            if not quiet and done:
                stderr.print(f"{output}: {len(done)} inputs already done")
            paths = [p for p in paths if p not in done]
        clf, dev = load_classifier(model, device, quiet)
        records = predict_records(paths, clf, device=dev, dtype=autocast_dtype(dev, precision), batch_size=batch_size,
                                  workers=workers, top_k=top_k, decoder=Decoder(decode_timeout or None),
                                  window=window, stride=stride)
        failed: list[str] = []
        fmt = "jsonl" if output else (format.value if format else default_format())
        with open(output, "a" if resume else "w", encoding="utf-8") if output else contextlib.nullcontext() as file:
            emit(_counted(records, len(paths), failed, quiet), fmt, columns=COLUMNS, table_row=_table_row, file=file)
        if failed:
            if not quiet:
                stderr.print(f"{len(failed)} of {len(paths)} videos could not be read")
            raise typer.Exit(1)


def _counted(records: Iterator[dict], total: int, failed: list[str], quiet: bool) -> Iterator[dict]:
    """The records, advancing the progress bar and noting the inputs that failed."""
    with progress(quiet) as bar:
        task = bar.add_task("predicting", total=total)
        for record in records:
            if record["error"] is not None:
                failed.append(record["path"])
            bar.advance(task)
            yield record


def _table_row(r: dict) -> list[str]:
    topk = ", ".join(f"{t['label']} {t['score']:.2f}" for t in r["topk"])
    score = "" if r["score"] is None else f"{r['score']:.3f}"
    return [r["path"], r["label"] or "", score, topk, r["error"] or ""]
