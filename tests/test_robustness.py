"""Real-size habits: files that lie, end early or are missing, runs that are killed and resumed."""

from __future__ import annotations

import json
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

from tests.test_cli import invoke
from tests.videos import indexed_frames, write_video


def _lying_avi(path: Path, frames: int, header_says: int) -> Path:
    """An MJPEG AVI whose stream header ('strh' dwLength) claims `header_says` frames."""
    write_video(path, indexed_frames(frames), fourcc="MJPG")
    data = bytearray(path.read_bytes())
    at = data.index(b"strh") + 8 + 32  # fourcc, size, then 8 fields of 4 bytes before dwLength
    data[at : at + 4] = struct.pack("<I", header_says)
    path.write_bytes(bytes(data))
    return path


def test_check_deep_reports_lying_headers_and_files_that_end_early(tmp_path):
    folder = tmp_path / "data" / "a"
    folder.mkdir(parents=True)
    write_video(folder / "fine.avi", indexed_frames(30), fourcc="MJPG")
    _lying_avi(folder / "liar.avi", frames=30, header_says=12)
    whole = write_video(tmp_path / "whole.avi", indexed_frames(30), fourcc="MJPG").read_bytes()
    (folder / "cut.avi").write_bytes(whole[: len(whole) // 2])  # the header still says 30

    shallow = invoke("check", tmp_path / "data", "--format", "json", "--workers", "2")
    assert shallow.exit_code == 0, shallow.output  # every file opens and has a first frame
    deep = invoke("check", tmp_path / "data", "--format", "json", "--deep", "--workers", "2")
    assert deep.exit_code == 1, deep.output
    suspect = {Path(s["path"]).name: s for s in json.loads(deep.stdout)["suspect"]}
    assert set(suspect) == {"liar.avi", "cut.avi"}
    assert (suspect["liar.avi"]["header_frames"], suspect["liar.avi"]["decoded_frames"]) == (12, 30)
    assert suspect["cut.avi"]["header_frames"] == 30 and suspect["cut.avi"]["decoded_frames"] < 30
    assert "ends early" in suspect["cut.avi"]["problem"]
    table = invoke("check", tmp_path / "data", "--deep")
    assert table.exit_code == 1 and "liar.avi: its header lists 12 frames but 30 decode" in table.stderr


def test_check_on_a_folder_without_videos_is_an_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no videos here")
    result = invoke("check", tmp_path)
    assert result.exit_code == 1 and "no video files found" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_predict_killed_then_resumed_records_every_input_exactly_once(trained, synth_data, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    clips = sorted(synth_data.rglob("*.mp4"))
    for i in range(120):  # enough work that the kill lands mid-run
        (inputs / f"clip{i:03d}.mp4").symlink_to(clips[i % len(clips)])
    (inputs / "clip050_bad.mp4").write_text("not a video")
    expected = sorted(str(p) for p in inputs.iterdir())
    out = tmp_path / "out.jsonl"
    args = [sys.executable, "-m", "vidclf", "predict", str(inputs), "--model", str(trained), "--output", str(out),
            "--workers", "0", "--batch-size", "1", "--quiet"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 20):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    with out.open("a") as f:
        f.write('{"path": "' + expected[-1] + '", "label": "cut by the ki')  # a line cut mid-record
    done_before = {r["path"] for r in map(json.loads, out.read_text().splitlines()[:-1])}
    assert 0 < len(done_before) < len(expected), "the kill should land mid-run"

    resumed = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 1, resumed.stderr  # the bad file is still bad
    records = _records(out)
    assert sorted(r["path"] for r in records) == expected  # every input exactly once
    assert [r["path"] for r in records if r["error"]] == [str(inputs / "clip050_bad.mp4")]
    assert resumed.stdout == ""  # records went to the file

    again = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 1  # only the bad file was tried again …
    assert sorted(r["path"] for r in _records(out)) == expected  # … and it is still recorded once


def test_predict_resume_composes_with_shard(trained, synth_data, tmp_path):
    clips = sorted(map(str, synth_data.rglob("*.mp4")))[:6]
    out = tmp_path / "part0.jsonl"
    first = invoke("predict", *clips[:3], "--model", trained, "--shard", "0/2", "--output", out, "--workers", "0")
    assert first.exit_code == 0, first.output
    result = invoke("predict", *clips, "--model", trained, "--shard", "0/2", "--output", out, "--resume",
                    "--workers", "0")
    assert result.exit_code == 0, result.output
    assert [r["path"] for r in _records(out)] == clips[0::2]
    assert invoke("predict", *clips, "--model", trained, "--resume").exit_code == 2  # needs --output


def test_train_reports_the_cache_size_after_the_first_epoch(synth_data, tmp_path):
    result = invoke("train", "--data", synth_data, "--epochs", "2", "--frames", "8", "--size", "32",
                    "--batch-size", "4", "--workers", "0", "--out", tmp_path / "runs", "--cache", tmp_path / "cache",
                    "--cache-size", "50MB")
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("decode cache")]
    assert str(tmp_path / "cache") in line and "of 0.05 GB" in line


def test_an_unwritable_cache_folder_turns_the_cache_off_with_one_warning(synth_data, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("the cache folder cannot be made inside a file")
    result = invoke("train", "--data", synth_data, "--epochs", "1", "--frames", "8", "--size", "32",
                    "--batch-size", "4", "--workers", "0", "--out", tmp_path / "runs", "--cache", blocker / "cache")
    assert result.exit_code == 0, result.output
    assert result.stderr.count("decode cache off") == 1 and "best checkpoint" in result.stderr


def test_evaluate_under_torchrun_counts_each_video_exactly_once(trained, synth_data, tmp_path):
    import os
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    (data / "left" / "zz_bad.mp4").write_text("not a video")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29519",
           "-m", "vidclf", "evaluate", "--model", str(trained), "--data", str(data), "--split", "all",
           "--format", "json", "--workers", "0", "--device", "cpu", "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]  # one video could not be read
    report = json.loads(done.stdout)  # only rank 0 printed
    assert report["num_clips"] == 18 and sum(map(sum, report["confusion_matrix"])) == 18  # 19 videos, one bad
    assert [Path(f["path"]).name for f in report["failed"]] == ["zz_bad.mp4"]
    single = invoke("evaluate", "--model", trained, "--data", data, "--split", "all", "--format", "json",
                    "--workers", "0")
    assert json.loads(single.stdout)["confusion_matrix"] == report["confusion_matrix"]
