"""A run that a scheduler stops, kills or preempts continues with the same command and ends exactly
where an uninterrupted run does: signals to the whole job, SIGKILL after a mid-epoch save (with the
decode cache being written), and torchrun ranks that must stop after the same step."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import SMALL
from tests.test_train import assert_same_weights
from vidclf.data.entry import HEADER, read_entry

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]  # a free port


def _command(synth_data: Path, tmp_path: Path, run: str, *, workers: int = 2) -> list[str]:
    """A named run of 3 short epochs (15 clips, a step per clip) that writes last.pt after every step."""
    args = ["train", "--data", synth_data, "--epochs", 3, "--frames", 8, "--size", 32, "--batch-size", 1,
            "--workers", workers, "--device", "cpu", "--save-every", 1e-6, "--cache", tmp_path / "cache",
            "--out", tmp_path / "models", "--name", run]
    return ["-m", "vidclf", *map(str, args)]


def _start(cmd: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def _finish(cmd: list[str]) -> str:
    proc = _start(cmd)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return err


def _position(last: Path) -> tuple[int, int]:
    """(epoch, step) of a last.pt; (-1, -1) before there is one."""
    try:
        saved = torch.load(last, weights_only=True)
    except (OSError, RuntimeError, EOFError):
        return -1, -1
    return saved["epoch"], saved["step"]


def _wait_until_saved(last: Path, proc: subprocess.Popen, position: tuple[int, int]) -> None:
    """Until the run has saved `position` (epoch, step) or beyond."""
    deadline = time.time() + 240
    while _position(last) < position:
        assert proc.poll() is None, proc.communicate()[1][-12000:]
        assert time.time() < deadline, "the run never got there"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def reference(synth_data, tmp_path_factory) -> Path:
    """last.pt of the run, uninterrupted."""
    tmp = tmp_path_factory.mktemp("reference")
    _finish([sys.executable, *_command(synth_data, tmp, "whole")])
    return tmp / "models" / "whole" / "last.pt"


def test_sigterm_to_the_process_group_stops_mid_epoch_and_the_same_command_finishes_the_run(
        synth_data, tmp_path, reference):
    cmd = [sys.executable, *_command(synth_data, tmp_path, "cut")]
    last = tmp_path / "models" / "cut" / "last.pt"
    proc = _start(cmd)
    _wait_until_saved(last, proc, (1, 2))  # into the second epoch
    os.killpg(proc.pid, signal.SIGTERM)  # what a scheduler does: every process of the job
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "killed by signal" not in err and "skipped" not in err
    assert "interrupted" in err and "continue with: the same command" in err
    epoch, step = _position(last)
    assert epoch == 1 and step >= 2  # mid-epoch: what was trained of epoch 2 is kept
    err = _finish(cmd)
    assert "continuing the run" in err and "warning" not in err
    assert_same_weights(last, reference)


def test_sigkill_of_every_process_while_the_cache_fills_loses_at_most_a_save(synth_data, tmp_path, reference):
    """SIGKILL gives no grace: the run continues from the last --save-every save, and the decode cache,
    written by worker processes killed mid-entry, holds only whole entries."""
    cmd = [sys.executable, *_command(synth_data, tmp_path, "killed")]
    last = tmp_path / "models" / "killed" / "last.pt"
    proc = _start(cmd)
    _wait_until_saved(last, proc, (0, 3))  # the first epoch: every clip is decoded and its entry written
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    entries = list((tmp_path / "cache").rglob("*.jpgs"))
    assert entries
    for path in entries:  # each whole, or not there at all
        with path.open("rb") as f:
            _, size, mtime, count, *_ = HEADER.unpack(f.read(HEADER.size))
            f.seek(0)
            frames = read_entry(f, (size, mtime), range)
        assert frames is not None and len(frames) == count, path
    _finish(cmd)
    assert_same_weights(last, reference)


def _rank_pid(torchrun: subprocess.Popen, rank: int) -> int:
    """The pid of one of torchrun's ranks: its child whose environment says RANK=rank."""
    deadline = time.time() + 60
    while time.time() < deadline:
        for task in Path(f"/proc/{torchrun.pid}/task").iterdir():
            for pid in (task / "children").read_text().split():
                try:
                    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                if f"RANK={rank}".encode() in env:
                    return int(pid)
        time.sleep(0.1)
    raise AssertionError(f"torchrun started no rank {rank}")


def test_torchrun_ranks_stop_after_the_same_step_and_the_same_command_finishes_the_run(tmp_path):
    """A signal that reaches one rank stops both after the same step (a rank stopping alone would
    leave the other in an all-reduce for ever); a signal to torchrun, which passes it to its ranks,
    does too. Each time the same command continues, and the run ends with the weights of one never stopped.

    Ranks agree every 4th step (stopping.EVERY), so epochs here are 20 steps long: a signal sent after
    the epoch's first agreed save lands well before its end."""
    from vidclf.synth import write_dataset

    data = tmp_path / "data"
    write_dataset(data, **{**SMALL, "clips_per_class": 16})  # 40 training clips: 20 steps a rank

    def torchrun(run: str) -> list[str]:
        return [*TORCHRUN, *_command(data, tmp_path, run, workers=0)]

    _finish(torchrun("whole"))
    last = tmp_path / "models" / "cut" / "last.pt"
    for position, target in (((1, 1), "one rank"), ((2, 1), "torchrun")):
        proc = _start(torchrun("cut"))
        _wait_until_saved(last, proc, position)
        os.kill(_rank_pid(proc, 1) if target == "one rank" else proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode != 0  # torchrun reports ranks that exit 130, and its own signal, as failures
        assert "interrupted in epoch" in err and "continue with: the same command" in err, err[-3000:]
        epoch, step = _position(last)
        assert epoch == position[0] and step > position[1], target  # mid-epoch, later than the save awaited
    _finish(torchrun("cut"))
    assert_same_weights(last, tmp_path / "models" / "whole" / "last.pt")


def test_continuing_keeps_the_recipe_applies_where_and_how_to_run_and_names_what_differs(trained):
    from dataclasses import replace

    from vidclf.errors import CheckpointError
    from vidclf.resume import continue_config, resume_config

    last = trained.parent / "last.pt"
    saved = resume_config(last)
    assert continue_config(last, saved) == (saved, None)  # the same command: nothing to say
    asked = replace(saved, lr=0.5, epochs=saved.epochs + 2, workers=3, data="/scratch/data")
    cfg, warning = continue_config(last, asked)
    assert (cfg.lr, cfg.epochs, cfg.workers, cfg.data) == (saved.lr, saved.epochs + 2, 3, "/scratch/data")
    assert f"--lr 0.5 (saved: {saved.lr})" in warning and "--epochs" in warning and "--data /scratch/data" in warning
    assert "--workers" not in warning  # how to run it changes nothing it learns
    with pytest.raises(CheckpointError, match="trained with --arch cnn-lstm; continuing it with --arch convgru"):
        continue_config(last, replace(saved, arch="convgru"))


def test_continuing_on_data_with_other_classes_is_an_error(trained, synth_data, tmp_path):
    import shutil

    from rich.console import Console

    from vidclf.errors import DatasetError
    from vidclf.resume import resume_config
    from vidclf.train import fit

    moved = tmp_path / "data"
    shutil.copytree(synth_data, moved)
    first = sorted(p for p in moved.iterdir() if p.is_dir())[0]
    first.rename(first.with_name("zzz"))
    last = trained.parent / "last.pt"
    with pytest.raises(DatasetError, match="are not those of the run"):
        fit(resume_config(last, data=str(moved)), console=Console(quiet=True), show_progress=False, resume=last)


def test_name_and_resume_together_are_a_usage_error(trained):
    from typer.testing import CliRunner

    from vidclf.cli import app

    result = CliRunner().invoke(app, ["train", "--name", "x", "--resume", str(trained.parent / "last.pt")])
    assert result.exit_code == 2 and "--name or --resume" in result.output
