"""Commands that take a trained model elsewhere: `vidclf export` (a file that runs without vidclf) and
`vidclf stream` (labels for a video as it plays)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vidclf.cli.common import (Checkpoint, Device, Precision, Quiet, Threshold, Verbose, app, errors, load_classifier,
                               set_threshold)

CHECK_CLIPS = 3  # real clips the exported file is run on, against PyTorch


@app.command()
def export(
    output: Annotated[Path, typer.Option("--output", "-o", help="The file to write (.onnx, .pt).")],
    model: Checkpoint = None,
    format: Annotated[str, typer.Option("--format", "-f", help="onnx (needs pip install 'vidclf[export]') or torchscript.")] = "onnx",
    check: Annotated[Optional[list[Path]], typer.Option(help="Videos to check the exported file on (repeatable). [default: 3 clips of the training data]")] = None,
    step: Annotated[bool, typer.Option(help="Export one step of a recurrent model for live streams: a uint8 frame and the state in, "
                                            "the logits and the next state out (checked against `stream` over whole streams).")] = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Write the model and its preprocessing to one file; run it on real clips and fail if its logits (a
    multi-label model's: probabilities, with its thresholds in the file) differ from PyTorch's by more than 1e-4."""
    with errors(verbose):
        import json

        from vidclf.export import export_model
        from vidclf.output import stderr

        clf, _ = load_classifier(model, "cpu", quiet)
        videos = check if check is not None else _training_clips(clf.path)
        if step:
            report = _export_step(clf, format, output, videos)
        else:
            report = export_model(clf, fmt=format, output=output, check_videos=videos)
        if not quiet:
            checked = f"{report['frames']}-frame streams" if step else f"{report['clips']} clips"
            stderr.print(f"wrote {report['path']} ({report['bytes'] / 1e6:.1f} MB); on {checked} at "
                         f"batch sizes {report['batch_sizes']} its {report['output']} differ from PyTorch's by at most "
                         f"{report['max_abs_diff']:.1e}")
        print(json.dumps(report))


def _export_step(clf, fmt: str, output: Path, videos: list) -> dict:
    """export --step, checked on the first frames of `videos` as streams."""
    import itertools

    import numpy as np

    from vidclf.export_step import CHECK_FRAMES, export_step
    from vidclf.stream import frames

    streams = [np.stack([f for _, f in itertools.islice(frames(str(v), clf.preprocess.size), CHECK_FRAMES)]) for v in videos]
    return export_step(clf, fmt=fmt, output=output, check_streams=streams)


def _training_clips(path: Path) -> list[str]:
    """A few videos of the dataset the checkpoint was trained on, when it is still there."""
    from vidclf import checkpoint
    from vidclf.data.files import scan

    data = checkpoint.load(path).get("train_config", {}).get("data")
    try:
        splits = scan(data)
    except Exception:  # noqa: BLE001  (moved or gone: export_model then checks on random clips)
        return []
    samples = splits.val + splits.train
    step = max(1, len(samples) // CHECK_CLIPS)
    return [s.path for s in samples[::step][:CHECK_CLIPS]]


@app.command()
def stream(
    source: Annotated[str, typer.Argument(help="A video file (read as a live stream), a camera index (0), an rtsp:// or http:// URL, or - for a container stream on stdin.")],
    model: Checkpoint = None,
    hop: Annotated[float, typer.Option(min=0.001, help="Seconds of video between records.")] = 1.0,
    top_k: Annotated[int, typer.Option(help="Labels listed per record.")] = 3,
    reconnect_tries: Annotated[int, typer.Option(min=1, help="Attempts to (re)open a live URL before giving up.")] = 3,
    threshold: Threshold = None,
    reset_every: Annotated[Optional[float], typer.Option(min=0.001, help="Seconds between restarts of the recurrent state "
                                                                     "(checkpoints trained --online). [default: never]")] = None,
    windows: Annotated[bool, typer.Option(help="Label clip windows even with a checkpoint trained --online (as for the others).")] = False,
    device: Device = "auto",
    precision: Precision = "auto",
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Classify a video as it plays: every --hop seconds one jsonl record (time, label, score, topk), flushed at
    once (a multi-label model's also lists every label present); Ctrl-C or the end of the stream stops it. A
    checkpoint trained --online makes one recurrent step per frame and carries its state; the others label the
    last clip span."""
    with errors(verbose):
        from vidclf.device import autocast_dtype
        from vidclf.output import emit
        from vidclf.stream import frames, stream_records

        clf, dev = load_classifier(model, device, quiet)
        set_threshold(clf, threshold)
        source_frames = frames(source, clf.preprocess.size, reconnect_tries=reconnect_tries)
        records = stream_records(clf, source_frames, device=dev, hop_s=hop, top_k=top_k, dtype=autocast_dtype(dev, precision),
                                 stepwise=False if windows else None, reset_s=reset_every)
        try:
            emit(records, "jsonl")
        except KeyboardInterrupt:  # the usual way to stop a live stream: not an error
            raise typer.Exit(0)
