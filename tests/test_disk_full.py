"""Writes that fail as on a user's machine: a small tmpfs filled to the last page (a full disk) and the
same remounted read-only. Each failure is one line naming the file and the OS's reason, and leaves the
previous file whole. Mounting needs root (or CAP_SYS_ADMIN); elsewhere these tests skip.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from vidclf import checkpoint
from vidclf.cli import app
from vidclf.errors import WriteError
from vidclf.plots import save_curves
from vidclf.trainlog import METRIC_COLUMNS, EpochLog

NO_SPACE = os.strerror(errno.ENOSPC)  # "No space left on device"
READ_ONLY = os.strerror(errno.EROFS)  # "Read-only file system"
TRAIN = ["--frames", "8", "--size", "32", "--batch-size", "4", "--workers", "0", "--device", "cpu", "--seed", "0"]
runner = CliRunner()


@contextlib.contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `folder` for the test's duration; skips where mounting is not allowed."""
    folder.mkdir()
    mount = shutil.which("mount")
    done = subprocess.run([mount, "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True) if mount else None
    if done is None or done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() if done else 'no mount command'})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def fill(folder: Path, leave: int = 0) -> None:
    """Take all but `leave` bytes of the disk, so that the next write bigger than that fails part-way
    (torch.save then raises "enforce fail … unexpected pos", not the OSError); 0: not a page left."""
    stat = os.statvfs(folder)
    with open(folder / "filler", "wb") as f:
        f.write(b"\0" * (stat.f_bavail * stat.f_frsize - leave))
    if not leave:
        with pytest.raises(OSError) as raised, open(folder / "filler", "ab") as f:
            f.write(b"\0" * stat.f_frsize)
        assert raised.value.errno == errno.ENOSPC


def fill_but_100kb(folder: Path) -> None:
    fill(folder, leave=100_000)


def read_only(folder: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)


def _checkpoint(value: float) -> dict:
    return {"model": {"name": "cnn-lstm"}, "classes": ["a"], "preprocess": {},
            "state_dict": {"w": torch.full((50_000,), value)}}  # 200 kB: bigger than any buffer on the way


@pytest.mark.parametrize("spoil, reason", [(fill, NO_SPACE), (fill_but_100kb, NO_SPACE), (read_only, READ_ONLY)],
                         ids=["full", "fills-mid-write", "read-only"])
def test_a_checkpoint_that_cannot_be_written_names_the_file_and_keeps_the_previous_one(tmp_path, spoil, reason):
    with tmpfs(tmp_path / "disk", "1m") as disk:
        path = disk / "run" / "last.pt"
        checkpoint.save(_checkpoint(1.0), path)
        spoil(disk)
        with pytest.raises(WriteError) as raised:
            checkpoint.save(_checkpoint(2.0), path)
        assert str(raised.value) == f"{path}: cannot write: {reason}"
        assert torch.equal(checkpoint.load(path)["state_dict"]["w"], torch.full((50_000,), 1.0))
        assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temporary left


def test_metrics_csv_on_a_full_disk_keeps_the_previous_file(tmp_path):
    row = dict.fromkeys(METRIC_COLUMNS, 1)  # whatever the columns are
    with tmpfs(tmp_path / "disk", "256k") as disk:
        log = EpochLog(console=Console(quiet=True), run_dir=disk)
        log._write_csv([row])
        before = (disk / "metrics.csv").read_bytes()
        fill(disk)
        with pytest.raises(WriteError, match=f"^{re.escape(str(disk))}/metrics.csv: cannot write: {NO_SPACE}$"):
            log._write_csv([row] * 2000)
        assert (disk / "metrics.csv").read_bytes() == before
        assert sorted(p.name for p in disk.iterdir() if p.name != "filler") == ["metrics.csv"]  # no temporary left


def test_metrics_csv_of_a_resumed_run_is_its_checkpoints_history(tmp_path):
    """A run that wrote epoch 2's row and then died before its checkpoint resumes from epoch 1: the
    row it writes for epoch 2 again replaces the old one."""
    rows = [{**dict.fromkeys(METRIC_COLUMNS, 0.5), "epoch": e} for e in (1, 2)]
    log = EpochLog(console=Console(quiet=True), run_dir=tmp_path)
    log.add(rows[1], rows)  # written, then killed before last.pt
    again = {**rows[1], "train_loss": 0.25}
    EpochLog(console=Console(quiet=True), run_dir=tmp_path).add(again, [rows[0], again])
    read = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [r["epoch"] for r in read] == ["1", "2"] and read[1]["train_loss"] == "0.25"


@pytest.mark.parametrize("spoil, reason", [(fill, NO_SPACE), (read_only, READ_ONLY)], ids=["full", "read-only"])
def test_curves_that_cannot_be_written_name_the_file_and_keep_the_previous_image(tmp_path, spoil, reason):
    history = [{"epoch": e, "train_loss": 1 / e, "train_acc": 0.1 * e, "val_loss": None, "val_acc": None}
               for e in (1, 2)]
    with tmpfs(tmp_path / "disk", "1m") as disk:
        path = save_curves(history[:1], disk / "curves.png")
        before = path.read_bytes()
        spoil(disk)
        with pytest.raises(WriteError, match=f"^{re.escape(str(path))}: cannot write: {reason}$"):
            save_curves(history, path)
        assert path.read_bytes() == before and sorted(p.name for p in disk.iterdir() if p.name != "filler") == [
            "curves.png"]


def test_train_on_a_disk_that_fills_stops_with_one_line_and_a_whole_last_checkpoint(synth_data, tmp_path):
    with tmpfs(tmp_path / "disk", "64m") as disk:
        first = runner.invoke(app, ["train", "--data", str(synth_data), "--out", str(disk), "--epochs", "1",
                                    "--no-cache", *TRAIN])
        assert first.exit_code == 0, first.output
        [run] = [p for p in disk.iterdir() if p.is_dir()]
        fill(disk, leave=1_000_000)  # room for metrics.csv and curves.png, not for a checkpoint (~12 MB)
        more = runner.invoke(app, ["train", "--resume", str(run / "last.pt"), "--epochs", "2", "--no-cache",
                                   "--workers", "0", "--device", "cpu"])
        assert more.exit_code == 1, more.output
        last_line = more.stderr.strip().splitlines()[-1]
        assert re.fullmatch(f"error: {re.escape(str(run))}/(best|last)\\.pt: cannot write: {NO_SPACE}", last_line), more.stderr
        assert "Traceback" not in more.output
        assert checkpoint.load(run / "last.pt")["epoch"] == 1  # the previous checkpoint, whole
        assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]


def test_train_into_a_read_only_folder_says_which_and_why(synth_data, tmp_path):
    with tmpfs(tmp_path / "disk", "256k") as disk:
        read_only(disk)
        result = runner.invoke(app, ["train", "--data", str(synth_data), "--out", str(disk / "models"), "--epochs", "1",
                                     "--no-cache", *TRAIN])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == f"error: {disk}/models: {READ_ONLY}"


def test_the_decode_cache_on_a_full_disk_turns_itself_off_and_training_goes_on(synth_data, tmp_path):
    with tmpfs(tmp_path / "disk", "256k") as disk:
        fill(disk)
        result = runner.invoke(app, ["train", "--data", str(synth_data), "--out", str(tmp_path / "models"),
                                     "--epochs", "1", "--cache", str(disk / "cache"), *TRAIN])
    assert result.exit_code == 0, result.output
    assert f"decode cache off: {disk}/cache: {NO_SPACE}" in " ".join(result.stderr.split())
