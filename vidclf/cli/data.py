"""Commands about datasets: write the embedded one, check a folder of videos."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vidclf.cli.common import (CacheDir, DecodeTimeout, Quiet, ReportFormat, ReportOption, Verbose, Workers, app, errors,
                               progress)


@app.command()
def synth(
    folder: Annotated[Path, typer.Argument(help="Where to write <class>/<clip>.mp4.")] = Path("data"),
    task: Annotated[str, typer.Option(help="motion (direction/rotation classes), speed (1× vs fast), multi "
                                           "(multi-label: two shapes, each moving or still; FOLDER/labels.csv), or stream: "
                                           "motion clips in FOLDER/train and long videos whose motion changes every 2–5 s in "
                                           "FOLDER/streams, with a .labels.csv (frame,label) each (for train --online).")] = "motion",
    classes: Annotated[Optional[int], typer.Option(help="Use only the first N classes of the task.")] = None,
    clips_per_class: Annotated[int, typer.Option(help="Clips written per class (multi: per label set).")] = 40,
    frames: Annotated[int, typer.Option(help="Frames per clip.")] = 16,
    size: Annotated[int, typer.Option(help="Frame width and height in pixels.")] = 64,
    seed: Annotated[int, typer.Option(help="Same seed, same videos.")] = 0,
    streams: Annotated[int, typer.Option(help="With --task stream: long videos written.")] = 2,
    stream_seconds: Annotated[float, typer.Option(help="With --task stream: the length of each long video.")] = 60.0,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Write the embedded dataset: clips whose classes differ only in how things move."""
    with errors(verbose):
        from vidclf.output import stderr
        from vidclf.synth import write_dataset, write_streams

        clips = folder / "train" if task == "stream" else folder
        written = write_dataset(clips, task=task, classes=classes, clips_per_class=clips_per_class,
                                frames=frames, size=size, seed=seed)
        if not quiet:
            stderr.print(f"wrote {len(written)} clips to {clips}" +
                         (f"; train with --data {folder / 'labels.csv'}" if task == "multi" else ""))
        if task == "stream":
            long = write_streams(folder / "streams", count=streams, seconds=stream_seconds, size=size, seed=seed,
                                 classes=classes)
            if not quiet:
                stderr.print(f"wrote {len(long)} streams of {stream_seconds:g} s with their frame labels to {folder / 'streams'}")


@app.command()
def check(
    paths: Annotated[Optional[list[Path]], typer.Argument(help="Dataset folders, CSV manifests or video files. [default: data]")] = None,
    format: ReportOption = ReportFormat.table,
    deep: Annotated[bool, typer.Option(help="Decode every frame: also find files that end early or whose header lies.")] = False,
    workers: Workers = None,
    decode_timeout: DecodeTimeout = 60.0,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Scan videos: clips, duration and sizes per class (a manifest's: per label, and labels per clip), unreadable
    and (--deep) suspect files, and a dataset's split problems (a class or label with no training clip; no
    validation clip, imbalance as warnings); exit 1 if any file fails or a class cannot train."""
    with errors(verbose):
        import json

        from vidclf.check import check_datasets, check_videos
        from vidclf.data.datasets import default_workers

        paths = paths or [Path("data")]
        with progress(quiet) as bar:
            task = bar.add_task("checking", total=None)
            report = check_videos(paths, workers=workers or default_workers() or 1, deep=deep,
                                  decode_timeout=decode_timeout or None, progress=lambda _: bar.advance(task))
        report["splits"] = check_datasets(paths)
        if format is ReportFormat.json:
            print(json.dumps(report, ensure_ascii=False, indent=2))
        else:
            _print_check(report)
        if report["failed"] or report["suspect"] or any(f["level"] == "error" for f in report["splits"]):
            raise typer.Exit(1)


def _print_check(report: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    from vidclf.output import stderr, stdout

    per_clip = report["labels_per_clip"]
    several = any(n != 1 for n in per_clip)
    title = f"{report['num_clips']} readable clips" + (
        " (labels per clip: " + ", ".join(f"{n}: {clips}" for n, clips in per_clip.items()) + ")" if several else "")
    table = Table(title=title)
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
    for finding in report["splits"]:
        stderr.print(f"[{'red' if finding['level'] == 'error' else 'yellow'}]{finding['level']}[/] "
                     f"{escape(finding['message'])}", highlight=False)


@app.command("cache")
def cache_command(
    data: Annotated[str, typer.Argument(help="Dataset folder (class folders or train/val/test) or a CSV manifest.")] = "data",
    size: Annotated[int, typer.Option(help="Frames are cached at SIZE×SIZE: train's --size. Entries hold every frame, "
                                           "so --frames and --frame-stride do not change them.")] = 64,
    cache: CacheDir = None,
    cache_size: Annotated[str, typer.Option(help="Bound on the cache's disk use, as train's --cache-size.")] = "20GB",
    shard: Annotated[Optional[str], typer.Option(help="I/N: only every N-th video from the I-th, for array jobs "
                                                      "filling one shared folder.")] = None,
    info: Annotated[bool, typer.Option("--info", help="Say what the cache holds (and how much of DATA) and exit.")] = False,
    clear: Annotated[bool, typer.Option("--clear", help="Remove every entry of the cache folder and exit.")] = False,
    format: ReportOption = ReportFormat.table,
    workers: Workers = None,
    decode_timeout: DecodeTimeout = 60.0,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Fill the decode cache with DATA's videos before training, on every core; resumable; exit 1 if any failed."""
    with errors(verbose):
        import json

        from vidclf.data.cache import ClipCache, default_cache_dir, parse_size

        folder = Path(cache) if cache else default_cache_dir()
        max_bytes = parse_size(cache_size)
        if clear or info:
            report = _cache_info(ClipCache(folder, max_bytes), data, size, clear)
        else:
            report = _fill(data, folder, max_bytes, size, shard, workers, decode_timeout, quiet)
        if format is ReportFormat.json:
            print(json.dumps(report, ensure_ascii=False, indent=2))
        else:
            _print_cache(report)
        if report.get("failed") or report.get("warnings"):
            raise typer.Exit(1)


def _fill(data: str, folder: Path, max_bytes: int, size: int, shard: Optional[str], workers: Optional[int],
          decode_timeout: float, quiet: bool) -> dict:
    from dataclasses import asdict

    from vidclf.data.datasets import default_workers
    from vidclf.data.fill import fill

    with progress(quiet) as bar:
        task = bar.add_task("caching", total=None)
        report = fill(data, folder=folder, max_bytes=max_bytes, size=size, shard=shard,
                      workers=default_workers() if workers is None else workers, decode_timeout=decode_timeout or None,
                      progress=lambda done, total: bar.update(task, completed=done, total=total))
    return {**asdict(report), "not_cached": report.not_cached}


def _cache_info(cache, data: str, size: int, clear: bool) -> dict:
    from vidclf.data.fill import coverage

    if clear:
        return {"folder": str(cache.folder), "freed_bytes": cache.clear()}
    current, old = cache.count()
    report = {"folder": str(cache.folder), "entries": current, "old_format_entries": old,
              "cache_bytes": cache.size(), "max_bytes": cache.max_bytes}
    if Path(data).exists():
        report["data"], (report["data_cached"], report["data_videos"]) = data, coverage(data, folder=cache.folder, size=size)
    return report


def _print_cache(report: dict) -> None:
    from vidclf.output import stderr, stdout

    gb = lambda n: f"{n / 1e9:.2f} GB"  # noqa: E731
    if "freed_bytes" in report:
        stdout.print(f"cleared {report['folder']}: {gb(report['freed_bytes'])} freed", highlight=False)
        return
    lines = [f"cache {report['folder']}: {gb(report['cache_bytes'])} of {gb(report['max_bytes'])}"]
    if "written" in report:
        lines.append(f"{report['present']} of {report['videos']} videos cached ({gb(report['bytes'])}; "
                     f"{report['written']} written now, in {report['seconds']:.1f} s)")
        if report["not_cached"] and not report["warnings"]:
            lines.append(f"{report['not_cached']} not cached: longer than 512 frames, or the bound was reached "
                         "(raise --cache-size)")
    else:
        lines.append(f"{report['entries']} entries" + (f", {report['old_format_entries']} of an older format "
                                                     "(removed first when room is needed)" if report["old_format_entries"] else ""))
        if "data" in report:
            lines.append(f"{report['data']}: {report['data_cached']} of {report['data_videos']} videos cached at this --size")
    stdout.print("\n".join(lines), highlight=False)
    for failure in report.get("failed", []):
        stderr.print(f"[red]unreadable[/] {failure['error']}", highlight=False)
    for warning in report.get("warnings", []):
        stderr.print(f"[red]error[/] {warning}", highlight=False)
