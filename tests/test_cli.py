"""The real CLI, driven in-process (Typer's runner) and as a subprocess where streams or signals matter."""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vidclf.cli import app

runner = CliRunner()
COMMANDS = ["synth", "check", "cache", "models", "summary", "train", "evaluate", "predict", "embed", "export", "stream"]


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def run_vidclf(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vidclf", *map(str, args)], capture_output=True, text=True,
                          **kwargs)


def test_help_never_imports_torch_or_cv2():
    code = (
        "import sys; from typer.testing import CliRunner; from vidclf.cli import app\n"
        f"for cmd in [[]] + [[c] for c in {COMMANDS!r}]:\n"
        "    r = CliRunner().invoke(app, cmd + ['--help'])\n"
        "    assert r.exit_code == 0, (cmd, r.output)\n"
        "    assert 'Usage' in r.output\n"
        "heavy = [m for m in ('torch', 'cv2', 'numpy', 'matplotlib') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_command_has_help():
    for cmd in COMMANDS:
        result = invoke(cmd, "--help")
        assert result.exit_code == 0, result.output
        assert len(result.output.split("Usage:")[1].split("\n")[2].strip()) > 10, cmd  # a description line


def test_synth_then_check(tmp_path):
    root = tmp_path / "d"
    result = invoke("synth", root, "--classes", "2", "--clips-per-class", "2", "--frames", "4", "--size", "32")
    assert result.exit_code == 0, result.output
    result = invoke("check", root, "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [r["clips"] for r in report["classes"]] == [2, 2] and report["failed"] == []
    assert report["classes"][0]["min_size"] == [32, 32]
    (root / report["classes"][0]["class"] / "broken.mp4").write_text("nope")
    result = invoke("check", root, "--format", "json")
    assert result.exit_code == 1, result.output
    failed = json.loads(result.stdout)["failed"]
    assert len(failed) == 1 and "broken.mp4" in failed[0]["error"]
    table = invoke("check", root)
    assert table.exit_code == 1 and "broken.mp4" in table.stderr and "clips" in table.stdout


def test_models_and_summary_list_every_architecture():
    from vidclf.models import MODELS, weights_preprocess

    listing = json.loads(invoke("models", "--format", "json").stdout)
    assert set(listing) == set(MODELS) >= {"cnn-lstm", "convgru", "r3d_18", "mvit_v2_s"}
    for arch in MODELS:
        fixed = weights_preprocess(arch, None)  # mvit_v2_s takes one shape only; s3d at least 6 frames
        frames, size = (fixed.frames, fixed.size) if fixed else (6, 32)
        result = invoke("summary", "--arch", arch, "--frames", frames, "--size", size)
        assert result.exit_code == 0, result.output
        assert "GFLOP" in result.stdout
    bad = invoke("summary", "--arch", "nope")
    assert bad.exit_code == 1 and "cnn-lstm" in bad.stderr  # the error lists the valid names


def test_train_writes_run_folder_and_keeps_stdout_clean(synth_data, tmp_path):
    result = invoke("train", "--data", synth_data, "--epochs", "2", "--frames", "8", "--size", "32",
                    "--batch-size", "4", "--workers", "0", "--out", tmp_path, "--cache", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "best checkpoint" in result.stderr
    (run,) = tmp_path.glob("cnn-lstm-*")
    assert {p.name for p in run.iterdir()} == {"best.pt", "last.pt", "metrics.csv", "curves.png"}
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"] and int(rows[0]["train_clips"]) == 15
    assert list((tmp_path / "cache").rglob("*.jpgs"))  # the decode cache filled
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # redrawn after every epoch


def test_train_usage_errors_are_one_line(tmp_path):
    result = invoke("train", "--data", tmp_path / "missing", "--out", tmp_path)
    assert result.exit_code == 1 and result.stderr.strip().count("\n") == 0
    assert "missing: no such dataset" in result.stderr
    result = invoke("train", "--data", tmp_path, "--epochs", "many")
    assert result.exit_code == 2


def test_evaluate_json(trained, synth_data, tmp_path):
    plot = tmp_path / "confusion.png"
    result = invoke("evaluate", "--model", trained, "--format", "json", "--workers", "0", "--plot", plot)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) >= {"accuracy", "top_k_accuracy", "mean_class_accuracy", "classes", "per_class",
                           "confusion_matrix", "num_clips", "failed"}
    assert report["num_clips"] == 3 and sum(map(sum, report["confusion_matrix"])) == 3
    assert plot.stat().st_size > 0
    table = invoke("evaluate", "--model", trained, "--data", synth_data, "--split", "all", "--workers", "0")
    assert table.exit_code == 0 and "18 clips" in table.stdout and "precision" in table.stdout


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "table"])
def test_predict_formats_parse(trained, synth_data, fmt):
    clips = sorted(synth_data.rglob("*.mp4"))[:3]
    result = invoke("predict", *clips, "--model", trained, "--format", fmt, "--workers", "0", "--top-k", "2")
    assert result.exit_code == 0, result.output
    if fmt == "jsonl":
        records = [json.loads(line) for line in result.stdout.splitlines()]
    elif fmt == "json":
        records = json.loads(result.stdout)
    elif fmt == "csv":
        records = list(csv.DictReader(io.StringIO(result.stdout)))
        for r in records:
            r["topk"] = json.loads(r["topk"])
    else:
        folded = "".join(line.strip("│ ") for line in result.stdout.splitlines())
        assert "topk" in result.stdout and folded.count(".mp4") == len(clips)
        return
    assert [r["path"] for r in records] == [str(c) for c in clips]
    for r in records:
        assert len(r["topk"]) == 2 and r["label"] == r["topk"][0]["label"]
        assert not r["error"]


def test_predict_goes_on_past_bad_files_and_exits_1(trained, synth_data, tmp_path):
    bad = tmp_path / "bad clip ü.mp4"
    bad.write_text("not a video")
    good = sorted(synth_data.rglob("*.mp4"))[:2]
    paths = [good[0], bad, tmp_path / "missing.mp4", good[1]]
    result = invoke("predict", *paths, "--model", trained, "--format", "jsonl", "--workers", "0")
    assert result.exit_code == 1, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["path"] for r in records] == list(map(str, paths))
    assert [r["error"] is None for r in records] == [True, False, False, True]
    assert "bad clip ü.mp4" in records[1]["error"] and "missing.mp4" in records[2]["error"]
    assert "2 of 4 videos could not be read" in result.stderr


def test_predict_reads_stdin_and_shards(trained, synth_data):
    clips = sorted(map(str, synth_data.rglob("*.mp4")))[:5]
    shards = []
    for i in range(2):
        result = invoke("predict", "-", "--model", trained, "--shard", f"{i}/2", "--workers", "0",
                        input="\n".join(clips) + "\n")
        assert result.exit_code == 0, result.output
        shards += [json.loads(line)["path"] for line in result.stdout.splitlines()]  # a pipe: jsonl
    assert sorted(shards) == clips
    assert invoke("predict", clips[0], "--model", trained, "--shard", "2/2").exit_code == 1


def test_predict_usage_errors(trained):
    assert invoke("predict").exit_code == 2
    assert invoke("predict", "x.mp4", "--format", "xml").exit_code == 2
    evil = invoke("predict", "x.mp4", "--model", Path(trained).parent / "metrics.csv")
    assert evil.exit_code == 1 and "not a checkpoint" in evil.stderr


def test_predict_windows_cover_the_video(trained, tmp_path):
    from vidclf.synth import write_dataset

    # 48 frames at 25 fps: 1.92 s; windows of 0.64 s (16 frames) every 0.32 s.
    (clip,) = write_dataset(tmp_path, classes=1, clips_per_class=1, frames=48, size=32, seed=3)
    result = invoke("predict", clip, "--model", trained, "--window", "0.64", "--stride", "0.32", "--format", "json")
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.stdout)
    starts = [w["start"] for w in record["windows"]]
    assert starts[0] == 0 and record["windows"][-1]["end"] == pytest.approx(1.92)
    assert all(abs(b - a - 0.32) < 1e-6 for a, b in zip(starts, starts[1:]))
    assert record["label"] and record["error"] is None


def test_predict_uses_newest_model_in_models_folder(trained, synth_data, tmp_path, monkeypatch):
    run = tmp_path / "models" / "run"
    run.mkdir(parents=True)
    (run / "best.pt").write_bytes(Path(trained).read_bytes())
    monkeypatch.chdir(tmp_path)
    clip = next(synth_data.rglob("*.mp4"))
    result = invoke("predict", clip, "--workers", "0")
    assert result.exit_code == 0, result.output
    assert "using models/run/best.pt" in result.stderr
    assert json.loads(result.stdout)["path"] == str(clip)


def test_sigint_saves_last_and_resume_continues(synth_data, tmp_path):
    args = ["train", "--data", synth_data, "--epochs", "50", "--frames", "8", "--size", "32", "--batch-size", "2",
            "--workers", "0", "--no-cache", "--out", tmp_path, "--device", "cpu"]
    proc = subprocess.Popen([sys.executable, "-m", "vidclf", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(tmp_path.glob("*/last.pt")) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert out == "" and "Traceback" not in err and "--resume" in err
    (last,) = tmp_path.glob("*/last.pt")
    import torch

    target = torch.load(last, weights_only=True)["epoch"] + 2
    result = invoke("train", "--resume", last, "--epochs", target, "--workers", "0")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((last.parent / "metrics.csv").open()))
    assert [r["epoch"] for r in rows][-2:] == [str(target - 1), str(target)]


def test_predict_into_head_exits_quietly(trained, synth_data):
    """`vidclf predict - | head -1`: the closed pipe is not an error and prints nothing."""
    paths = "\n".join(map(str, sorted(synth_data.rglob("*.mp4")))) + "\n"
    done = subprocess.run(
        f"{sys.executable} -m vidclf predict - --model '{trained}' --workers 0 | head -1",
        shell=True, input=paths, capture_output=True, text=True, executable="/bin/bash")
    assert json.loads(done.stdout)["error"] is None
    assert done.stderr == ""



def test_one_file_decodes_here_with_opencv_threads(trained, synth_data, monkeypatch):
    """Fewer files than cores: no worker processes, and OpenCV threads the decoder (threads=0)."""
    from vidclf.data.decoder import Decoder

    used, real_call = [], Decoder.call
    monkeypatch.setattr(Decoder, "call", lambda self, name, *a, **k: used.append(k.get("threads", name))
                        or real_call(self, name, *a, **k))
    monkeypatch.setattr("vidclf.predict.default_workers", lambda: 2)
    clip = str(next(synth_data.rglob("*.mp4")))
    result = invoke("predict", clip, "--model", trained, "--format", "jsonl")
    assert result.exit_code == 0, result.output
    assert used == [0]  # decoded in this process (a worker's call would not be seen here), threaded
