"""Split checks: each problem and its message, for each layout; and where train, check and evaluate say them.

Only `scan` runs here (it reads names, never frames), so files named .mp4 with any bytes will do,
except in the CLI tests that train or evaluate, which use real clips.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vidclf.cli import app
from vidclf.data.files import Sample, scan, stratified_split
from vidclf.data.splits import IMBALANCE_RATIO, Finding, check_splits, missing_from_split, raise_or_warn
from vidclf.errors import DatasetError


def _touch(root: Path, counts: dict[str, int]) -> None:
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / cls / f"{i}.mp4").write_bytes(b"x")


def _check(root: Path) -> list[Finding]:
    return check_splits(scan(root), root)


def test_a_healthy_split_has_no_findings(tmp_path):
    _touch(tmp_path / "train", {"left": 8, "right": 6})
    _touch(tmp_path / "val", {"left": 2, "right": 2})
    assert _check(tmp_path) == []


def test_a_class_only_in_val_is_an_error_naming_both_folders(tmp_path):
    _touch(tmp_path / "train", {"left": 8, "right": 6})
    _touch(tmp_path / "val", {"left": 2, "up": 12})
    findings = _check(tmp_path)
    assert findings[0] == Finding("error", f"no training clip of up, so the model cannot learn it: {tmp_path}/val/up "
                                           f"has 12 clips but {tmp_path}/train has no up/ folder")
    # right trains but is never validated; up's missing validation is not repeated beside its error
    assert findings[1] == Finding("warning", f"{tmp_path}/val: no validation clip of right; "
                                             "its accuracy is never measured")
    assert len(findings) == 2


def test_an_empty_training_folder_and_a_class_only_in_test(tmp_path):
    _touch(tmp_path / "train", {"left": 4, "up": 0})
    _touch(tmp_path / "val", {"left": 1})
    _touch(tmp_path / "test", {"left": 1, "down": 3, "up": 1})
    [error] = [f for f in _check(tmp_path) if f.level == "error"]
    assert error.message == (f"no training clip of down, up, so the model cannot learn them: "
                             f"{tmp_path}/test/down has 3 clips but {tmp_path}/train has no down/ folder; "
                             f"{tmp_path}/test/up has 1 clip but {tmp_path}/train/up holds no video")


def test_an_empty_class_folder(tmp_path):
    _touch(tmp_path, {"left": 5, "right": 5, "empty": 0})
    [error] = [f for f in _check(tmp_path) if f.level == "error"]
    assert error.message.endswith(f"it: {tmp_path}/empty holds no video")


def test_a_manifest_class_listed_only_for_validation(tmp_path):
    manifest = tmp_path / "labels.csv"
    with manifest.open("w", newline="") as f:
        rows = [("a.mp4", "left", "train"), ("b.mp4", "left", "val"), ("c.mp4", "up", "val"), ("d.mp4", "up", "test")]
        csv.writer(f).writerows([("path", "label", "split"), *rows])
    [error] = check_splits(scan(manifest), manifest)
    assert error == Finding("error", f"no training clip of up, so the model cannot learn it: "
                                     f"{manifest} lists 1 val and 1 test clips of up but no train clip")


def test_a_one_clip_class_trains_and_is_not_validated(tmp_path):
    _touch(tmp_path, {"left": 5, "right": 5, "rare": 1})
    [finding] = _check(tmp_path)
    assert finding == Finding("warning", f"{tmp_path}: no validation clip of rare; its accuracy is never measured")


def test_no_validation_split_at_all_is_not_a_warning(tmp_path):
    _touch(tmp_path, {"left": 5, "right": 5})
    assert check_splits(scan(tmp_path, val_split=0.0), tmp_path) == []


def test_the_held_out_share_never_takes_a_class_s_last_clip():
    samples = [Sample(f"{c}{i}.mp4", c) for c, n in ((0, 1), (1, 2), (2, 3)) for i in range(n)]
    train, val = stratified_split(samples, 0.8, seed=0)  # round(0.8·n) would take every clip of each class
    assert sorted({s.label for s in train}) == [0, 1, 2]
    assert [sum(s.label == c for s in val) for c in range(3)] == [0, 1, 2]


def test_imbalance_at_the_threshold_names_the_ratio_and_the_option(tmp_path):
    _touch(tmp_path / "train", {"big": 2 * IMBALANCE_RATIO, "mid": 5, "small": 2})
    _touch(tmp_path / "val", {"big": 1, "mid": 1, "small": 1})
    [finding] = _check(tmp_path)
    assert finding == Finding("warning", f"{tmp_path}: imbalanced classes: big has {2 * IMBALANCE_RATIO} training "
                                         f"clips, small 2 ({IMBALANCE_RATIO}×); --balance sampler draws every "
                                         "class equally often")


def test_imbalance_below_the_threshold_is_quiet(tmp_path):
    _touch(tmp_path / "train", {"big": 2 * IMBALANCE_RATIO - 1, "small": 2})
    _touch(tmp_path / "val", {"big": 1, "small": 1})
    assert _check(tmp_path) == []


def test_raise_or_warn_raises_the_error_before_any_warning():
    warned = []
    raise_or_warn([Finding("warning", "w")], warned.append)
    assert warned == ["w"]
    with pytest.raises(DatasetError, match="^e$"):
        raise_or_warn([Finding("error", "e"), Finding("warning", "w2")], warned.append)
    assert warned == ["w"]


def test_missing_from_split_names_the_model_s_classes():
    samples = [Sample("a.mp4", 0), Sample("b.mp4", 2)]
    assert missing_from_split(samples, ["left", "right", "up"], source="data", split="val") == Finding(
        "warning", "data: the val split has no clip of right (a class of the model): its recall is not measured "
                   "and its support is 0")
    assert missing_from_split([Sample("a.mp4", 1), Sample("b.mp4", 0)], ["left", "right"], source="d",
                              split="val") is None


# The commands: train stops before decoding, check reports, evaluate warns.

runner = CliRunner()


def test_train_stops_on_a_class_with_no_training_clip(tmp_path):
    _touch(tmp_path / "data" / "train", {"left": 3})
    _touch(tmp_path / "data" / "val", {"left": 1, "up": 2})
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "models"),
                                 "--no-cache", "--workers", "0", "--device", "cpu"])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (f"error: no training clip of up, so the model cannot learn it: "
                                     f"{tmp_path}/data/val/up has 2 clips but {tmp_path}/data/train has no up/ folder")


def test_check_reports_split_findings_and_exits_1_on_errors(synth_data, tmp_path):
    data = tmp_path / "data"
    classes = sorted(p.name for p in synth_data.iterdir())
    for cls in classes:  # every clip of the first class goes to val/ only; the others to train/ and val/
        clips = sorted((synth_data / cls).iterdir())
        for i, clip in enumerate(clips[:3]):
            split = "val" if cls == classes[0] or i == 0 else "train"
            (data / split / cls).mkdir(parents=True, exist_ok=True)
            shutil.copy(clip, data / split / cls)
    result = runner.invoke(app, ["check", str(data), "--format", "json", "--workers", "1"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["failed"] == [] and report["splits"] == [
        {"level": "error", "message": f"no training clip of {classes[0]}, so the model cannot learn it: "
                                      f"{data}/val/{classes[0]} has 3 clips but {data}/train has no {classes[0]}/ folder"}]
    table = runner.invoke(app, ["check", str(data), "--workers", "1"])
    assert table.exit_code == 1 and f"error no training clip of {classes[0]}" in table.stderr


def test_check_warns_without_failing(synth_data):
    result = runner.invoke(app, ["check", str(synth_data), "--format", "json", "--workers", "1"])
    assert result.exit_code == 0 and json.loads(result.stdout)["splits"] == []


def test_evaluate_warns_about_classes_with_no_clip_in_the_split(trained, synth_data, tmp_path):
    data = tmp_path / "data"
    first, *rest = sorted(p.name for p in synth_data.iterdir())
    for cls in rest:  # the split evaluated holds no clip of the model's first class
        for split in ("train", "val"):
            shutil.copytree(synth_data / cls, data / split / cls)
    result = runner.invoke(app, ["evaluate", "--model", str(trained), "--data", str(data), "--workers", "0",
                                 "--clips", "1", "--format", "json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (f"warning {data}: the val split has no clip of {first} (a class of the model): its recall is not "
            "measured and its support is 0") in " ".join(result.stderr.split())
