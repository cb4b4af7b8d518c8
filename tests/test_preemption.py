"""A run that a scheduler stops, kills or preempts continues with the same command and ends exactly
where an uninterrupted run does: signals to the whole job, SIGKILL after a mid-epoch save (with the
decode cache being written), and torchrun ranks that must stop after the same step."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

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


def _children(pid: int) -> list[int]:
    pids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            pids += map(int, (task / "children").read_text().split())
        except OSError:
            pass  # the thread ended
    return pids


def _rank_pid(torchrun: subprocess.Popen, rank: int) -> int:
    """The pid of one of torchrun's ranks: its child whose environment says RANK=rank."""
    deadline = time.time() + 60
    while time.time() < deadline:
        for pid in _children(torchrun.pid):
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in env:
                return pid
        time.sleep(0.1)
    raise AssertionError(f"torchrun started no rank {rank}")


def _job(pid: int) -> list[int]:
    """Every process of a job: `pid` and all its descendants (torchrun starts each rank in a session
    of its own, so only a walk of the tree finds them all, as a scheduler's cgroup does)."""
    job, todo = [], [pid]
    while todo:
        job.append(todo.pop())
        todo += _children(job[-1])
    return job


def _sigterm_the_job(pid: int) -> int:
    """SIGTERM to every process of the job at once, as Slurm or Kubernetes stop one; the count signalled."""
    job = _job(pid)
    for p in job:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGTERM)
    return len(job)


@pytest.fixture(scope="module")
def ddp(tmp_path_factory) -> tuple[Path, Path]:
    """Data of 40 training clips (20 steps an epoch on each of two ranks) and last.pt of the torchrun run
    uninterrupted. Ranks agree every 4th step (stopping.EVERY): a signal sent after an agreed save
    lands well before the epoch's end."""
    from vidclf.synth import write_dataset

    tmp = tmp_path_factory.mktemp("ddp")
    write_dataset(tmp / "data", **{**SMALL, "clips_per_class": 16})
    _finish([*TORCHRUN, *_command(tmp / "data", tmp, "whole", workers=0)])
    return tmp / "data", tmp / "models" / "whole" / "last.pt"


def _interrupt(cmd: list[str], last: Path, position: tuple[int, int], send: Callable[[subprocess.Popen], object]) -> str:
    """Start `cmd`, signal it with `send` once last.pt has reached `position`, and check that every rank
    stopped mid-epoch, later than that, with rank 0's last.pt written; stderr."""
    proc = _start(cmd)
    _wait_until_saved(last, proc, position)
    send(proc)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0  # torchrun reports ranks that exit 130, and its own signal, as failures
    assert "interrupted in epoch" in err and "continue with: the same command" in err, err[-3000:]
    epoch, step = _position(last)
    assert epoch == position[0] and step > position[1], err[-3000:]
    return err


def test_torchrun_ranks_stop_after_the_same_step_and_the_same_command_finishes_the_run(ddp, tmp_path):
    """A signal that reaches one rank stops both after the same step (a rank stopping alone would
    leave the other in an all-reduce for ever); a signal to torchrun, which passes it to its ranks,
    does too. Each time the same command continues, and the run ends with the weights of one never stopped."""
    data, reference = ddp
    cmd = [*TORCHRUN, *_command(data, tmp_path, "cut", workers=0)]
    last = tmp_path / "models" / "cut" / "last.pt"
    _interrupt(cmd, last, (1, 1), lambda proc: os.kill(_rank_pid(proc, 1), signal.SIGTERM))
    _interrupt(cmd, last, (2, 1), lambda proc: os.kill(proc.pid, signal.SIGTERM))
    _finish(cmd)
    assert_same_weights(last, reference)


def test_sigterm_to_every_process_of_a_torchrun_job_with_workers_stops_cleanly_and_continues(ddp, tmp_path):
    """Schedulers signal every process of a job at once: torchrun, the ranks, their DataLoader workers,
    the forkserver that starts those and the decoding children. Only the ranks may act on it: a helper
    that died first failed the step it served ("DataLoader worker exited unexpectedly") and lost the epoch.
    Once in the first epoch, once in the second; then the same command ends with the unstopped weights."""
    data, reference = ddp
    cmd = [*TORCHRUN, *_command(data, tmp_path, "job", workers=2)]
    last = tmp_path / "models" / "job" / "last.pt"
    for position in ((0, 1), (1, 1)):
        signalled = []
        err = _interrupt(cmd, last, position, lambda proc: signalled.append(_sigterm_the_job(proc.pid)))
        assert signalled[0] >= 1 + 2 * (1 + 2), "torchrun, two ranks and their two workers each"
        assert "exited unexpectedly" not in err and "error:" not in err, err[-3000:]
    _finish(cmd)
    assert_same_weights(last, reference)


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
