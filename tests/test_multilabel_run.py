"""Multi-label runs end to end on the embedded multi task: training, resume, DDP, evaluate, predict,
check, export, and the single-label paths left as they were."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from vidclf.cli import app
from vidclf.train import TrainConfig, fit

from tests.test_train import StopAfterReads, assert_same_weights

quiet = Console(stderr=True, quiet=True)
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def multi_data(tmp_path_factory) -> Path:
    """3 labels: none, each one, each pair, 3 clips of each set (21 clips), as labels.csv."""
    from vidclf.synth import write_dataset

    root = tmp_path_factory.mktemp("multi") / "data"
    write_dataset(root, task="multi", classes=3, clips_per_class=3, frames=8, size=32)
    return root / "labels.csv"


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(data=str(data), num_frames=8, size=32, batch_size=4, epochs=1, workers=0, cache=None, out=str(out),
                device="cpu", model={"dropout": 0.1}, val_split=0.3)
    return TrainConfig(**{**base, **kw})


RECIPE = dict(epochs=2, monitor="val_map", balance="weights", mix="cutmix")  # every multi-label piece at once


@pytest.fixture(scope="module")
def multi_run(multi_data, tmp_path_factory):
    return fit(_cfg(multi_data, tmp_path_factory.mktemp("models"), **RECIPE), console=quiet, show_progress=False)


def test_synth_multi_writes_every_label_set_in_a_manifest(multi_data):
    rows = list(csv.DictReader(multi_data.open()))
    sets = {row["labels"] for row in rows}
    assert len(rows) == 21 and sets == {"", "down", "left", "right", "down;left", "down;right", "left;right"}
    assert all((multi_data.parent / row["path"]).is_file() for row in rows)


def test_a_multi_label_run_checkpoints_its_kind_thresholds_and_map(multi_run):
    saved = torch.load(multi_run.best, weights_only=True)
    assert saved["multi_label"] is True and saved["classes"] == ["down", "left", "right"]
    assert len(saved["thresholds"]) == 3 and all(0 < t < 1 for t in saved["thresholds"])
    history = torch.load(multi_run.run_dir / "last.pt", weights_only=True)["history"]
    assert all(0 <= r["val_map"] <= 1 and 0 <= r["val_acc"] <= 1 and r["val_class_acc"] is None for r in history)
    row = history[saved["epoch"] - 1]
    assert saved["best_metric"] == row["val_map"] == max(r["val_map"] for r in history)  # --monitor mAP
    with (multi_run.run_dir / "metrics.csv").open() as f:
        assert [float(r["val_map"]) for r in csv.DictReader(f)] == pytest.approx([r["val_map"] for r in history])


def test_evaluate_of_the_centre_clip_gives_the_map_training_validated_with(multi_run):
    result = invoke("evaluate", "--model", multi_run.best, "--clips", "1", "--workers", "0", "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    saved = torch.load(multi_run.best, weights_only=True)
    row = saved["history"][saved["epoch"] - 1]
    assert report["multi_label"] and report["map"] == pytest.approx(row["val_map"], abs=1e-6)
    assert report["exact_set"] == pytest.approx(row["val_acc"]) and report["num_clips"] == row["val_clips"]
    assert [r["label"] for r in report["per_label"]] == ["down", "left", "right"]
    table = invoke("evaluate", "--model", multi_run.best, "--clips", "1", "--workers", "0")
    assert table.exit_code == 0 and "mAP" in table.stdout and "threshold" in table.stdout


def test_predict_lists_every_label_at_or_above_its_threshold(multi_run, multi_data):
    videos = sorted(str(p) for p in (multi_data.parent / "clips").glob("*_000.mp4"))
    result = invoke("predict", *videos, "--model", multi_run.best, "--format", "jsonl", "--workers", "0", "--clips", "1")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    thresholds = dict(zip(["down", "left", "right"], torch.load(multi_run.best, weights_only=True)["thresholds"]))
    for record in records:
        scores = {t["label"]: t["score"] for t in record["topk"]}  # all three labels: top-3 of 3
        assert [x["label"] for x in record["labels"]] == [k for k, v in sorted(scores.items(), key=lambda kv: -kv[1])
                                                        if v >= round(thresholds[k], 6) - 1e-6]
    everything = invoke("predict", *videos[:2], "--model", multi_run.best, "--format", "csv", "--workers", "0",
                        "--threshold", "0")
    rows = list(csv.DictReader(io.StringIO(everything.stdout)))
    assert everything.exit_code == 0 and len(rows) == 2
    for row in rows:  # every label, the likeliest first
        assert row["labels"].split(";") == [t["label"] for t in json.loads(row["topk"])]
    nothing = invoke("predict", videos[0], "--model", multi_run.best, "--format", "json", "--workers", "0",
                     "--threshold", "1")
    assert json.loads(nothing.stdout)[0]["labels"] == []


def test_windows_and_streams_carry_the_labels_present(multi_run, multi_data):
    from vidclf.checkpoint import load_classifier
    from vidclf.predict import predict_windows
    from vidclf.stream import frames, stream_records

    clf = load_classifier(multi_run.best, device=torch.device("cpu"))
    clf.thresholds = [0.0, 0.0, 2.0]  # down and left always, right never
    video = str(multi_data.parent / "clips" / "left+right_000.mp4")
    record = predict_windows(video, clf, device=torch.device("cpu"), window=0.2)
    assert {x["label"] for x in record["labels"]} == {"down", "left"}
    assert record["windows"] and all({x["label"] for x in w["labels"]} == {"down", "left"} for w in record["windows"])
    (first, *_) = stream_records(clf, frames(video, 32), device=torch.device("cpu"), hop_frames=4)
    assert {x["label"] for x in first["labels"]} == {"down", "left"} and set(first) == {"time", "label", "score", "topk",
                                                                                         "labels"}


def test_single_label_records_are_unchanged_and_refuse_a_threshold(trained, synth_data):
    video = next((synth_data / "left").glob("*.mp4"))
    result = invoke("predict", video, "--model", trained, "--format", "jsonl", "--workers", "0")
    assert result.exit_code == 0 and set(json.loads(result.stdout)) == {"path", "label", "score", "topk", "error"}
    refused = invoke("predict", video, "--model", trained, "--threshold", "0.5")
    assert refused.exit_code == 2 and "single-label model" in refused.output


def test_a_multi_label_run_resumes_to_the_weights_of_an_uninterrupted_one(multi_run, multi_data, tmp_path):
    # 15 training clips, batches of 4: 4 steps an epoch; the 6th look falls on step 1 of epoch 2.
    cut = fit(_cfg(multi_data, tmp_path, **RECIPE), console=quiet, show_progress=False, stop=StopAfterReads(5))
    assert cut.interrupted and torch.load(cut.run_dir / "last.pt", weights_only=True)["step"] == 1
    resumed = fit(_cfg(multi_data, tmp_path, **RECIPE), console=quiet, show_progress=False, resume=cut.run_dir / "last.pt")
    assert_same_weights(multi_run.run_dir / "last.pt", resumed.run_dir / "last.pt")
    a, b = (torch.load(r.run_dir / "last.pt", weights_only=True) for r in (multi_run, resumed))
    assert a["thresholds"] == b["thresholds"] and [r["val_map"] for r in a["history"]] == [r["val_map"] for r in b["history"]]


def test_two_processes_train_and_validate_every_clip_once(multi_data, tmp_path):
    """torchrun with 2 CPU processes (gloo): the ranks' validation probabilities are gathered, so mAP
    ranks every validation clip once, and rank 0 saves the thresholds chosen on all of them."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29521",
           "-m", "vidclf", "train", "--data", str(multi_data), "--epochs", "1", "--frames", "8", "--size", "32",
           "--batch-size", "4", "--workers", "0", "--no-cache", "--out", str(tmp_path / "two"), "--device", "cpu",
           "--val-split", "0.3", "--quiet"]  # (torchrun's own parser takes --monitor for its --monitor-interval)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = (tmp_path / "two").glob("cnn-lstm-*")
    (row,) = csv.DictReader((run / "metrics.csv").open())
    assert (int(row["train_clips"]), int(row["val_clips"])) == (16, 6)  # 15 + 1 padded, split 8 + 8; 3 + 3
    saved = torch.load(run / "best.pt", weights_only=True)
    assert 0 <= float(row["val_map"]) <= 1 and saved["multi_label"] and len(saved["thresholds"]) == 3


def test_options_that_need_the_other_kind_of_labels_are_refused(multi_data, synth_data, tmp_path):
    with pytest.raises(ValueError, match="--monitor mAP needs multi-label"):
        fit(_cfg(synth_data, tmp_path, monitor="val_map"), console=quiet, show_progress=False)
    with pytest.raises(ValueError, match="--balance sampler"):
        fit(_cfg(multi_data, tmp_path, balance="sampler"), console=quiet, show_progress=False)


def test_a_multi_label_step_learns_from_mixed_label_rows_with_positive_weights(multi_data, tmp_path):
    from vidclf import distributed
    from vidclf.run import build_run
    from vidclf.stopping import StopSignal
    from vidclf.train import Trainer

    run = build_run(_cfg(multi_data, tmp_path, balance="weights", mix="mixup"), device=torch.device("cpu"),
                    rank=distributed.Rank(), say=quiet.print)
    assert run.multi_label and run.loss_weights.tolist() == pytest.approx([10 / 5, 10 / 5, 10 / 5], rel=0.5)
    trainer = Trainer(run, console=quiet, show_progress=False, stop=StopSignal())
    batch = next(iter(run.train_loader))
    assert batch.labels.shape == (4, 3)
    totals, n = trainer.train_step(batch, epoch=0, step=0)
    loss, exact = totals.tolist()
    assert n == 4 and loss > 0 and 0 <= exact <= 4


def test_check_takes_a_manifest_as_its_dataset(multi_data, tmp_path):
    result = invoke("check", multi_data, "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["labels_per_clip"] == {"0": 3, "1": 9, "2": 9} and report["num_clips"] == 21
    assert {r["class"]: r["clips"] for r in report["classes"]} == {"(no label)": 3, "down": 9, "left": 9, "right": 9}
    untrained = tmp_path / "m.csv"
    clips = multi_data.parent / "clips"
    untrained.write_text(f"path,labels,split\n{clips}/left_000.mp4,left,train\n{clips}/left+right_000.mp4,left;right,val\n")
    result = invoke("check", untrained)
    assert result.exit_code == 1 and "no training clip of right" in result.stderr


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_export_writes_probabilities_and_thresholds(multi_run, tmp_path):
    from vidclf.checkpoint import load_classifier
    from vidclf.export import export_model

    clf = load_classifier(multi_run.best, device=torch.device("cpu"))
    report = export_model(clf, fmt="torchscript", output=tmp_path / "m.pt")
    assert report["output"] == "probabilities" and report["max_abs_diff"] <= 1e-4
    extra = {"vidclf.json": ""}
    loaded = torch.jit.load(str(tmp_path / "m.pt"), _extra_files=extra)
    meta = json.loads(extra["vidclf.json"])
    assert meta["multi_label"] and meta["thresholds"] == pytest.approx(clf.thresholds) and meta["output"]["name"] == "probabilities"
    out = loaded(torch.randn(2, 8, 6, 32, 32))
    assert ((out >= 0) & (out <= 1)).all()


def test_pick_mistakes_orders_false_positives_and_negatives_by_confidence():
    from vidclf.report.gallery import pick_mistakes

    probabilities = torch.tensor([[0.9, 0.2], [0.6, 0.1], [float("nan")] * 2, [0.3, 0.8], [0.7, 0.45], [0.2, 0.9]])
    targets = torch.tensor([[0, 0], [0, 1], [1, 1], [1, 1], [1, 1], [0, 1]])
    false_pos, false_neg = pick_mistakes(probabilities, targets, [0.5, 0.5], limit=2)
    assert false_pos.shown == [0, 1] and false_pos.total == 2  # labels given at 0.9, 0.6
    assert false_neg.shown == [1, 3] and false_neg.total == 3  # labels denied at 0.1, 0.3 (then 0.45)


def test_the_report_of_a_multi_label_model_shows_its_false_positives_and_negatives(multi_run, tmp_path):
    result = invoke("evaluate", "--model", multi_run.best, "--workers", "0", "--clips", "1", "--format", "json",
                    "--report", tmp_path / "report", "--gallery", "2")
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    assert 'id="false-positives"' in page and 'id="false-negatives"' in page and "true labels" in page
    assert "probabilities" not in json.loads(result.stdout)
