"""Commands about datasets: write the embedded one, check a folder of videos."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vidclf.cli.common import DecodeTimeout, Quiet, ReportFormat, Verbose, Workers, app, errors, progress


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
    with errors(verbose):
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
    """Scan videos: clips, duration and sizes per class, unreadable and (--deep) suspect files; exit 1 if any."""
    with errors(verbose):
        import json

        from vidclf.check import check_videos
        from vidclf.datasets import default_workers

        with progress(quiet) as bar:
            task = bar.add_task("checking", total=None)
            report = check_videos(paths or [Path("data")], workers=workers or default_workers() or 1, deep=deep,
                                  decode_timeout=decode_timeout or None, progress=lambda _: bar.advance(task))
        if format is ReportFormat.json:
            print(json.dumps(report, ensure_ascii=False, indent=2))
        else:
            _print_check(report)
        if report["failed"] or report["suspect"]:
            raise typer.Exit(1)


def _print_check(report: dict) -> None:
    from rich.table import Table

    from vidclf.output import stderr, stdout

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
