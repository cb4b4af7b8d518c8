"""Multi-label data and metrics: manifest cells, the split, the loss, AP against hand computations and
scikit-learn, threshold choice and the set metrics."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vidclf.data.files import Sample, scan
from vidclf.data.labels import multilabel_split, multi_hot, parse_cell
from vidclf.data.splits import check_splits
from vidclf.errors import DatasetError
from vidclf.multilabel import (DEFAULT_THRESHOLD, THRESHOLD_FLOOR, average_precision, bce_loss, choose_thresholds,
                               mean_average_precision, multilabel_metrics, set_metrics)


def _manifest(tmp_path, text: str):
    path = tmp_path / "labels.csv"
    path.write_text(text, encoding="utf-8")
    return path


# --- manifests -------------------------------------------------------------------------------------

def test_cells_split_on_semicolons_strip_spaces_and_an_empty_cell_is_no_label():
    assert parse_cell(" bikes ; street ", where="m.csv:2") == ("bikes", "street")
    assert parse_cell("", where="m.csv:2") == parse_cell("  ", where="m.csv:2") == parse_cell(None, where="x") == ()
    assert parse_cell("playing guitar", where="m.csv:2") == ("playing guitar",)  # a space is part of a label


@pytest.mark.parametrize("cell, reason", [("bikes|street", "holds '|'"), ("bikes,street", "holds ','"),
                                          ("bikes;;street", "empty label"), ("bikes;", "empty label"),
                                          ("bikes;bikes", "listed twice")])
def test_bad_cells_are_refused_naming_the_file_and_line(tmp_path, cell, reason):
    path = _manifest(tmp_path, f'path,labels\na.mp4,street\nb.mp4,"{cell}"\n')
    with pytest.raises(DatasetError, match=rf"labels.csv:3: .*{reason}"):
        scan(path)


def test_a_manifest_with_several_labels_in_a_cell_is_multi_label(tmp_path):
    path = _manifest(tmp_path, "path,labels,split\na.mp4,bikes;street,train\nb.mp4,,train\nc.mp4, street ,val\n"
                               "d.mp4,cars,train\n")
    splits = scan(path)
    assert splits.multi_label and splits.classes == ["bikes", "cars", "street"]
    assert [s.label for s in splits.train] == [(0, 2), (), (1,)] and [s.label for s in splits.val] == [(2,)]
    assert splits.train[0].path == str(tmp_path / "a.mp4")


def test_one_label_a_row_stays_single_label_unless_asked_and_the_old_label_column_still_reads(tmp_path):
    path = _manifest(tmp_path, "path,label,split\na.mp4,bikes,train\nb.mp4,street,val\n")
    single = scan(path)
    assert not single.multi_label and [s.label for s in single.train + single.val] == [0, 1]
    forced = scan(path, multi_label=True)
    assert forced.multi_label and [s.label for s in forced.train + forced.val] == [(0,), (1,)]


def test_an_empty_cell_in_a_single_label_manifest_points_at_multi_label(tmp_path):
    path = _manifest(tmp_path, "path,label\na.mp4,bikes\nb.mp4,\n")
    with pytest.raises(DatasetError, match=r"labels.csv:3: no label .*--multi-label"):
        scan(path)
    assert [s.label for s in scan(path, multi_label=True, val_split=0).train] == [(0,), ()]


def test_a_header_without_labels_or_with_both_columns_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="path,labels"):
        scan(_manifest(tmp_path, "path,tags\na.mp4,x\n"))
    with pytest.raises(DatasetError, match="not both"):
        scan(_manifest(tmp_path, "path,label,labels\na.mp4,x,y\n"))


def test_class_folders_become_one_label_sets_when_asked(synth_data):
    splits = scan(synth_data, multi_label=True)
    assert splits.multi_label and all(isinstance(s.label, tuple) and len(s.label) == 1 for s in splits.train)


def test_the_split_holds_out_each_labels_share_and_never_its_last_training_positive():
    samples = [Sample(f"{i}.mp4", labels) for i, labels in enumerate(
        [(0,)] * 10 + [(1,)] * 10 + [(0, 1)] * 10 + [(2,)] * 2 + [(2, 3)] + [()] * 10)]
    train, val = multilabel_split(samples, 0.2, seed=0)
    assert sorted(train + val) == sorted(samples)
    count = lambda part, label: sum(label in s.label for s in part)  # noqa: E731
    assert all(count(train, label) >= 1 for label in range(4))  # label 3's only clip stays in training
    assert count(val, 2) == 1 and count(val, 3) == 0 and 3 <= count(val, 0) <= 6 and sum(not s.label for s in val) == 2
    assert multilabel_split(samples, 0.2, seed=0) == (train, val) != multilabel_split(samples, 0.2, seed=1)


def test_split_checks_count_each_label_of_a_clip():
    from vidclf.data.files import Splits

    splits = Splits(["a", "b", "c"], train=[Sample("1", (0, 1)), Sample("2", ())], val=[Sample("3", (2,))],
                    layout="manifest", multi_label=True)
    (error,) = [f for f in check_splits(splits, "m.csv") if f.level == "error"]
    assert "no training clip of c" in error.message and "m.csv lists 1 val clips of c" in error.message


# --- the loss --------------------------------------------------------------------------------------

def test_the_loss_is_binary_cross_entropy_per_label_with_positive_weights_and_smoothing():
    logits, targets = torch.tensor([[2.0, -1.0], [0.5, 0.0]]), torch.tensor([[1, 0], [0, 1]])
    by_hand = -(math.log(torch.sigmoid(torch.tensor(2.0))) + math.log(1 - torch.sigmoid(torch.tensor(-1.0)))
                + math.log(1 - torch.sigmoid(torch.tensor(0.5))) + math.log(0.5)) / 4
    assert bce_loss(logits, targets).item() == pytest.approx(by_hand, rel=1e-6)
    weighted = bce_loss(logits, targets, pos_weight=torch.tensor([3.0, 1.0]))
    assert weighted.item() == pytest.approx(by_hand + 2 * -math.log(torch.sigmoid(torch.tensor(2.0))) / 4, rel=1e-6)
    smoothed = bce_loss(logits, targets, smoothing=0.2)
    assert smoothed.item() == pytest.approx(F.binary_cross_entropy_with_logits(logits, targets * 0.8 + 0.1).item())


def test_the_loss_of_mixed_targets_is_the_mix_of_the_losses():
    logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    a, b = torch.tensor([[1, 0, 1]] * 4), torch.tensor([[0, 1, 1]] * 4)
    mixed = bce_loss(logits, 0.3 * a + 0.7 * b)
    assert mixed.item() == pytest.approx((0.3 * bce_loss(logits, a) + 0.7 * bce_loss(logits, b)).item(), rel=1e-6)


# --- average precision -----------------------------------------------------------------------------

def test_ap_by_hand():
    # Ranked: + − + − +: precision 1/1, 2/3, 3/5 at the three recall steps of 1/3.
    assert average_precision(torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5]), torch.tensor([1, 0, 1, 0, 1])) == \
        pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    # A tie of a positive and a negative enters together: recall ½ at precision 1, then 1 at 2/3.
    assert average_precision(torch.tensor([0.9, 0.8, 0.8, 0.1]), torch.tensor([1, 0, 1, 0])) == pytest.approx(0.5 + 1 / 3)
    assert average_precision(torch.tensor([0.2, 0.1]), torch.tensor([1, 1])) == 1.0
    assert average_precision(torch.tensor([0.2, 0.1]), torch.tensor([0, 0])) is None


def test_ap_equals_scikit_learns_average_precision_score():
    """Values from sklearn.metrics.average_precision_score (scikit-learn 1.9.1) on these scores, which
    are rounded to tenths so that many tie; computed once, so the suite does not need scikit-learn."""
    g = torch.Generator().manual_seed(0)
    targets = (torch.rand(40, 3, generator=g) < 0.3).long()
    probs = (torch.rand(40, 3, generator=g) * 0.6 + targets * 0.3).round(decimals=1)
    sklearn = [0.8602075841778359, 0.8441325190646457, 0.7258702769538683]
    assert [average_precision(probs[:, i], targets[:, i]) for i in range(3)] == pytest.approx(sklearn, abs=1e-12)


def test_map_leaves_out_and_names_labels_without_a_positive():
    probs = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.8, 0.5]])
    result = mean_average_precision(probs, torch.tensor([[1, 0, 0], [0, 1, 0]]), ["a", "b", "c"])
    assert result == {"map": 1.0, "ap": [1.0, 1.0, None], "left_out": ["c"]}


# --- thresholds and sets ---------------------------------------------------------------------------

def test_thresholds_are_f1_optimal_midway_with_a_default_for_few_positives_and_a_floor():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.4, 0.3, 0.2])
    # Label 0: + + + − − −: F1 = 1 keeping the top three: midway between 0.7 and 0.4.
    # Label 1: two positives only: the default. Label 2: all six positive and scored low: the floor.
    targets = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 1], [1, 1, 1, 1, 1, 1]]).T
    low = torch.tensor([0.06, 0.05, 0.04, 0.03, 0.02, 0.01])
    probs = torch.stack([scores, scores, low], dim=1)
    assert choose_thresholds(probs, targets) == pytest.approx([0.55, DEFAULT_THRESHOLD, THRESHOLD_FLOOR])
    # + − + + − −: keeping one gives F1 2/4, three 4/6, four (three hits) 6/7: the best.
    mixed = torch.tensor([1, 0, 1, 1, 0, 0])[:, None]
    assert choose_thresholds(scores[:, None], mixed) == pytest.approx([(0.4 + 0.3) / 2])


def test_set_metrics_per_label_per_clip_and_exact_sets():
    probs = torch.tensor([[0.9, 0.2], [0.6, 0.7], [0.1, 0.1], [0.3, 0.8]])
    targets = torch.tensor([[1, 0], [1, 0], [0, 0], [0, 1]])
    result = set_metrics(probs, targets, [0.5, 0.5], ["a", "b"])
    a, b = result["per_label"]
    assert (a["precision"], a["recall"], a["support"]) == (1.0, 1.0, 2)
    assert (b["precision"], b["recall"], b["f1"]) == (0.5, 1.0, pytest.approx(2 / 3))
    # Clips: exact (1), {a, b} for {a}: P ½ R 1 F1 ⅔, nothing for nothing (1), exact (1).
    assert result["samples"] == pytest.approx({"precision": 3.5 / 4, "recall": 1.0, "f1": (3 + 2 / 3) / 4})
    assert result["exact_set"] == 0.75


def test_metrics_put_each_labels_ap_beside_its_set_metrics():
    probs, targets = torch.tensor([[0.9, 0.2], [0.1, 0.7]]), torch.tensor([[1, 0], [0, 0]])
    report = multilabel_metrics(probs, targets, [0.5, 0.5], ["a", "b"])
    assert report["map"] == 1.0 and report["map_left_out"] == ["b"] and report["exact_set"] == 0.5
    assert [row["ap"] for row in report["per_label"]] == [1.0, None] and report["num_clips"] == 2


def test_multi_hot():
    assert multi_hot((0, 2), 4) == (1, 0, 1, 0) and multi_hot(1, 3) == (0, 1, 0) and multi_hot((), 2) == (0, 0)
