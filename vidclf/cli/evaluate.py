"""`vidclf evaluate`: metrics of a checkpoint on a dataset split, as tables or JSON, a confusion plot, and
with --report a page of the videos it gets wrong.

Runs under torchrun too: each rank evaluates its shard, rank 0 prints the whole and writes the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vidclf.cli.common import (Checkpoint, Clips, Crops, DecodeTimeout, Device, Precision, Quiet, ReportFormat, ReportOption,
                               Threshold, Verbose, Workers, app, errors, load_classifier, progress, set_threshold)


@app.command()
def evaluate(
    model: Checkpoint = None,
    data: Annotated[Optional[str], typer.Option(help="Dataset folder or CSV manifest. [default: the one the model was trained on]")] = None,
    manifest: Annotated[Optional[Path], typer.Option(help="A CSV manifest path,label[,split] (same as --data FILE.csv).")] = None,
    split: Annotated[str, typer.Option(help="val, test, train or all.")] = "val",
    top_k: Annotated[int, typer.Option(help="k of the top-k accuracy.")] = 5,
    clips: Clips = 3,
    crops: Crops = 1,
    threshold: Threshold = None,
    format: ReportOption = ReportFormat.table,
    plot: Annotated[Optional[Path], typer.Option(help="Save the confusion matrix as an image (PNG, SVG or PDF).")] = None,
    report_dir: Annotated[Optional[Path], typer.Option(
        "--report", help="Write DIR/index.html: metrics, settings, curves and the videos the model gets wrong, "
                         "with the frames it saw; opens from disk in a browser.", rich_help_panel="Report")] = None,
    gallery: Annotated[int, typer.Option(min=0, help="Videos shown of the errors, and of the least confident "
                                                     "correct videos.", rich_help_panel="Report")] = 50,
    animate: Annotated[bool, typer.Option(help="Also a looping animation of each shown video's centre clip.",
                                          rich_help_panel="Report")] = False,
    neighbours: Annotated[bool, typer.Option(help="Also each shown video's nearest training videos by embedding "
                                                  "(embeds the whole train split).", rich_help_panel="Report")] = False,
    batch_size: Annotated[int, typer.Option(help="Clips per batch.")] = 16,
    timeline: Annotated[bool, typer.Option(help="Score a label for every frame of long videos: each video under --data with "
                                                "NAME.labels.csv (frame,label) beside it, labelled as predict --timeline does.")] = False,
    workers: Workers = None,
    decode_timeout: DecodeTimeout = 60.0,
    device: Device = "auto",
    precision: Precision = "auto",
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Accuracy, top-k, per-class precision/recall/F1 and the confusion matrix of a trained model; of a
    multi-label model mAP, per-label AP and precision/recall/F1 at its thresholds, and exact label sets."""
    with errors(verbose):
        if timeline:
            return _evaluate_timeline(model, data, device, precision, format, quiet)

        from rich.markup import escape

        from vidclf import checkpoint, distributed
        from vidclf.data.datasets import default_workers
        from vidclf.data.decoder import Decoder
        from vidclf.data.splits import missing_from_split
        from vidclf.device import autocast_dtype, resolve_device
        from vidclf.evaluate import evaluate_samples
        from vidclf.output import stderr

        if report_dir is None and (animate or neighbours):
            raise typer.BadParameter("needs --report DIR", param_hint="--animate" if animate else "--neighbours")
        rank = distributed.setup(resolve_device(device).type)
        try:
            if report_dir is not None and rank.is_main:
                from vidclf.report import make_folder

                make_folder(report_dir)
            clf, dev = load_classifier(model, device, quiet or not rank.is_main)
            set_threshold(clf, threshold)
            if clf.multi_label and plot is not None:
                raise typer.BadParameter("a multi-label model has no confusion matrix", param_hint="--plot")
            saved = checkpoint.load(clf.path)
            trained = saved.get("train_config", {})
            source = str(manifest) if manifest else data or trained.get("data", "data")
            samples = _split(source, split, clf, trained)
            missing = missing_from_split(samples, clf.classes, source=source, split=split)
            if missing and not quiet and rank.is_main:
                stderr.print(f"[yellow]warning[/] {escape(missing.message)}", highlight=False)
            workers = default_workers() if workers is None else workers
            run_on = dict(device=distributed.rank_device(dev, rank), dtype=autocast_dtype(dev, precision),
                          decoder=Decoder(decode_timeout or None), batch_size=batch_size)
            with progress(quiet or not rank.is_main) as bar:
                task = bar.add_task(f"evaluating {split}", total=-(-len(samples) // rank.world))
                report = evaluate_samples(clf, samples, k=top_k, workers=workers,
                                          views=(clips, crops), progress=lambda n: bar.advance(task, n),
                                          probabilities=report_dir is not None, **run_on)
            if report_dir is not None:
                from vidclf.report import Evaluated

                evaluated = Evaluated(samples, source, split, (clips, crops))
                training = _split(source, "train", clf, trained) if neighbours else None
                selection = _select(clf, evaluated, report.pop("probabilities"), gallery, training, workers,
                                    quiet=quiet or not rank.is_main, **run_on)
        finally:
            distributed.teardown()
        if not rank.is_main:
            return
        report["views"] = {"clips": clips, "crops": crops} if format is ReportFormat.json else clips * crops
        _show(report, clf, format, plot)
        if report_dir is not None:
            _write_report(report_dir, selection, clf=clf, checkpoint=saved, evaluated=evaluated, evaluation=report, animate=animate,
                          decoder=Decoder(decode_timeout or None), batch_size=batch_size, workers=workers, quiet=quiet)
        if report["failed"]:
            raise typer.Exit(1)


def _show(report: dict, clf, format: ReportFormat, plot: Optional[Path]) -> None:
    """The metrics on stdout, as tables or JSON, and the confusion matrix as a picture if asked."""
    import json

    if plot is not None:
        from vidclf.plots import save_confusion

        save_confusion(report["confusion_matrix"], clf.classes, plot)
    if format is ReportFormat.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    elif clf.multi_label:
        _print_multilabel(report)
    else:
        _print_report(report, clf.classes)


def _evaluate_timeline(model, data: Optional[str], device: str, precision: str, format, quiet: bool) -> None:
    """evaluate --timeline: per-frame accuracy, right 16 frames after a change, and frames until a change is followed."""
    import json

    from vidclf.device import autocast_dtype
    from vidclf.output import stderr, stdout
    from vidclf.timeline import evaluate_timelines

    if data is None:
        raise typer.BadParameter("needs --data FOLDER of videos with NAME.labels.csv beside them", param_hint="--timeline")
    clf, dev = load_classifier(model, device, quiet)
    report = evaluate_timelines(data, clf, device=dev, dtype=autocast_dtype(dev, precision))
    if format is ReportFormat.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        def cell(value, digits: int = 3) -> str:
            return "" if value is None else f"{value:.{digits}f}"

        from rich.table import Table

        table = Table(title=f"per frame ({'one recurrent step a frame' if report['stepwise'] else 'the clip ending at each frame'})")
        for col in ("video", "frames", "accuracy", "16 after a change", "from 16 after on", "frames to follow", "changes"):
            table.add_column(col, justify="left" if col == "video" else "right")
        for r in report["videos"] + [{"path": "all", **report}]:
            table.add_row(r["path"], str(r["frames"]), cell(r["accuracy"]), cell(r["after_change"]), cell(r["settled"]),
                          cell(r["follow_frames"], 1), str(r["changes"]))
        stdout.print(table)
    for failure in report["failed"]:
        stderr.print(f"[red]unreadable[/] {failure['error']}", highlight=False)
    if report["failed"]:
        raise typer.Exit(1)


def _split(source: str, split: str, clf, trained: dict):
    """The videos of `split`, split as the model's training run split them."""
    from vidclf.evaluate import split_samples

    return split_samples(source, split, clf.classes, val_split=trained.get("val_split", 0.2), seed=trained.get("seed", 0),
                         multi_label=clf.multi_label)


def _select(clf, evaluated, probabilities, limit: int, training, workers: int | None, *, quiet: bool, **run_on):
    """`report.select` (on every rank), with a spinner while --neighbours embeds the train split."""
    from vidclf.report import select

    with progress(quiet or training is None) as bar:
        task = bar.add_task("embedding for --neighbours", total=None)
        return select(clf, evaluated, probabilities, limit=limit, training=training, workers=workers,
                      progress=lambda n: bar.advance(task, n), **run_on)


def _write_report(folder: Path, selection, *, quiet: bool, **settings) -> None:
    """`report.write` (settings are its keywords) behind a spinner; the page's path on stderr."""
    from vidclf.output import stderr
    from vidclf.report import write

    with progress(quiet) as bar:
        bar.add_task("writing the report", total=None)
        index = write(folder, selection, **settings)
    if not quiet:
        stderr.print(f"report: {index}", highlight=False)


def _print_report(report: dict, classes: list[str]) -> None:
    from rich.table import Table

    from vidclf.output import stderr, stdout

    k = next(iter(report["top_k_accuracy"]))
    views = f"{report['views']} view{'s' if report['views'] != 1 else ''}"
    stdout.print(f"[bold]{report['num_clips']} clips[/]  accuracy {report['accuracy']:.4f} ({views})  "
                 f"clip accuracy {report['clip_accuracy']:.4f}  "
                 f"top-{k} {report['top_k_accuracy'][k]:.4f}  mean class accuracy {report['mean_class_accuracy']:.4f}")
    per_class = Table(title="per class")
    for col in ("class", "precision", "recall", "f1", "support"):
        per_class.add_column(col, justify="left" if col == "class" else "right")
    for row in report["per_class"]:
        per_class.add_row(row["class"], f"{row['precision']:.3f}", f"{row['recall']:.3f}",
                          f"{row['f1']:.3f}", str(row["support"]))
    stdout.print(per_class)
    confusion = Table(title="confusion (rows: true, columns: predicted)")
    confusion.add_column("")
    for c in classes:
        confusion.add_column(c, justify="right")
    for c, row in zip(classes, report["confusion_matrix"]):
        confusion.add_row(c, *map(str, row))
    stdout.print(confusion)
    for failure in report["failed"]:
        stderr.print(f"[red]unreadable[/] {failure['error']}", highlight=False)


def _print_multilabel(report: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    from vidclf.output import stderr, stdout

    views = f"{report['views']} view{'s' if report['views'] != 1 else ''}"
    mean_ap = "-" if report["map"] is None else f"{report['map']:.4f}"
    samples = report["samples"]
    stdout.print(f"[bold]{report['num_clips']} clips[/]  mAP {mean_ap}  exact label sets {report['exact_set']:.4f} "
                 f"({views})  centre clip {report['clip_exact_set']:.4f}  per clip: precision "
                 f"{samples['precision']:.3f} recall {samples['recall']:.3f} F1 {samples['f1']:.3f}")
    per_label = Table(title="per label (at its threshold)")
    for col in ("label", "AP", "precision", "recall", "f1", "support", "threshold"):
        per_label.add_column(col, justify="left" if col == "label" else "right")
    for row in report["per_label"]:
        per_label.add_row(row["label"], "-" if row["ap"] is None else f"{row['ap']:.3f}", f"{row['precision']:.3f}",
                          f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"]), f"{row['threshold']:.3f}")
    stdout.print(per_label)
    if report["map_left_out"]:
        stderr.print(f"[yellow]warning[/] left out of mAP, with no positive clip in the split: "
                     f"{escape(', '.join(report['map_left_out']))}", highlight=False)
    for failure in report["failed"]:
        stderr.print(f"[red]unreadable[/] {failure['error']}", highlight=False)
