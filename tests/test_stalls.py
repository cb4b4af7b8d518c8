"""A file whose reads stall (a network mount that stops answering) never hangs a command.

A real FUSE filesystem (tests/stallfs.py) serves a clip whose reads block after half its bytes,
inside a class folder of a dataset; each command must abandon it after --decode-timeout, report it
and go on. Skipped where FUSE cannot mount.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.stallfs import fuse_unavailable, mounted
from tests.test_cli import invoke

TIMEOUT = "2"  # seconds without a decoded frame
STALLED = "x_stall.mp4"


@pytest.fixture(scope="module")
def stalling_data(synth_data, tmp_path_factory):
    """A copy of the synth dataset with a stalling clip mounted in as `left/mnt/x_stall.mp4`."""
    reason = fuse_unavailable()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("stalls")
    data = root / "data"
    shutil.copytree(synth_data, data)
    source = root / "source"
    source.mkdir()
    shutil.copy(next((synth_data / "left").glob("*.mp4")), source / STALLED)
    (data / "left" / "mnt").mkdir()
    with mounted(source, data / "left" / "mnt"):
        yield data
    deadline = time.time() + 10  # unmounted: abandoned readers can die now
    while _decoder_processes() and time.time() < deadline:
        time.sleep(0.1)
    assert not _decoder_processes(), "a decoding process outlived the stall"


def _decoder_processes() -> list[int]:
    """Live decoding children of this test process (zombies are dead already)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if b"vidclf.data.decoder" in cmdline and state != "Z" and int(ppid) == os.getpid():
            found.append(int(pid))
    return found


def _timed(*args):
    start = time.monotonic()
    result = invoke(*args)
    return result, time.monotonic() - start


def test_check_abandons_the_stalled_file_and_reports_it(stalling_data):
    """Run as in a shell pipeline: the reader of its output must see the end of it, although the
    process that was reading the stalled file cannot die before the mount goes away."""
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "vidclf", "check", str(stalling_data), "--format", "json",
                           "--workers", "2", "--decode-timeout", TIMEOUT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    (failed,) = report["failed"]
    assert failed["path"].endswith(STALLED) and f"no progress for {TIMEOUT} s" in failed["error"]
    assert report["num_clips"] == 18 and time.monotonic() - start < 30


def test_train_skips_the_stalled_file_and_finishes(stalling_data, tmp_path):
    result, seconds = _timed("train", "--data", stalling_data, "--epochs", "1", "--frames", "8", "--size", "32",
                             "--batch-size", "4", "--workers", "0", "--out", tmp_path, "--device", "cpu",
                             "--decode-timeout", TIMEOUT)
    assert result.exit_code == 0, result.output
    skipped = [line for line in result.stderr.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 1 and STALLED in skipped[0] and "no progress" in skipped[0]
    assert list(tmp_path.glob("*/best.pt")) and seconds < 60


def test_evaluate_reports_the_stalled_file_and_scores_the_rest(trained, stalling_data):
    result, seconds = _timed("evaluate", "--model", trained, "--data", stalling_data, "--split", "all",
                             "--format", "json", "--workers", "0", "--decode-timeout", TIMEOUT)
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["num_clips"] == 18 and [Path(f["path"]).name for f in report["failed"]] == [STALLED]
    assert seconds < 30


def test_predict_in_worker_processes_records_the_stall_and_goes_on(trained, stalling_data):
    inputs = sorted(map(str, stalling_data.rglob("*.mp4")))
    result, seconds = _timed("predict", *inputs, "--model", trained, "--format", "jsonl", "--workers", "2",
                             "--decode-timeout", TIMEOUT)
    assert result.exit_code == 1, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["path"] for r in records] == inputs
    (bad,) = [r for r in records if r["error"]]
    assert bad["path"].endswith(STALLED) and "no progress" in bad["error"] and seconds < 30
