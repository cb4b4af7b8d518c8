"""Multi-view testing: clips spread over a video and crops, decoded in one pass, their probabilities averaged."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.test_cli import invoke
from tests.videos import decode_index, indexed_frames, write_video
from vidclf.data import sampling, video
from vidclf.data.views import load_views, view_count


def test_spread_clips_cover_the_video_at_the_training_stride():
    assert sampling.spread_clips(100, 4, stride=2, clips=3) == [[0, 2, 4, 6], [46, 48, 50, 52], [93, 95, 97, 99]]
    assert sampling.spread_clips(100, 4, stride=2, clips=1) == [sampling.clip_indices(100, 4, stride=2)]
    assert sampling.spread_clips(3, 4, stride=2, clips=2) == [[0, 1, 2], [0, 1, 2]]  # short: all frames, each view
    assert sampling.crop_offsets(85, 64, 3) == [0, 10, 21] and sampling.crop_offsets(85, 64, 1) == [10]
    with pytest.raises(ValueError, match="--crops"):
        sampling.crop_offsets(85, 64, 2)


def test_views_come_from_one_pass_over_the_file(tmp_path, monkeypatch):
    path = write_video(tmp_path / "v.avi", indexed_frames(100, (64, 80)), fourcc="MJPG")
    opens, real_open = [], video._open
    monkeypatch.setattr(video, "_open", lambda *a, **k: opens.append(1) or real_open(*a, **k))
    views, length = load_views(path, num_frames=8, size=80, stride=2, clips=3, crops=1)
    assert len(opens) == 2  # the probe, then one sequential read for every view
    assert views.shape == (4, 8, 80, 80, 3) and length == 8
    firsts = [[decode_index(f) for f in v] for v in views]
    assert firsts[0] == sampling.clip_indices(100, 8, stride=2)  # view 0: the centre clip
    assert firsts[1:] == sampling.spread_clips(100, 8, stride=2, clips=3)
    clip, _ = video.load_clip(path, num_frames=8, size=80, stride=2)
    assert np.array_equal(views[0], clip)  # exactly what a single-clip run sees


@pytest.mark.parametrize("clips, crops", [(1, 1), (1, 3), (3, 1), (2, 3)])
def test_view_count_is_what_load_views_gives(tmp_path, clips, crops):
    path = write_video(tmp_path / "v.avi", indexed_frames(30, (48, 64)), fourcc="MJPG")
    views, _ = load_views(path, num_frames=4, size=32, clips=clips, crops=crops)
    assert views.shape[0] == view_count(clips, crops)


def test_three_crops_run_along_the_longer_side(tmp_path):
    frames = np.zeros((20, 40, 80, 3), np.uint8)
    frames[:, :, :20] = 255  # a white band at the left edge of a wide frame
    path = write_video(tmp_path / "wide.avi", frames, fourcc="MJPG")
    views, _ = load_views(path, num_frames=4, size=32, clips=1, crops=3)
    assert views.shape == (4, 4, 32, 32, 3)
    left, centre, right = (v[0].mean() for v in views[1:])
    assert left > 100 > centre and right < 10  # the band shows in the left crop only


def _probs(clf, clip: np.ndarray) -> torch.Tensor:
    from vidclf.preprocess import to_model_input

    x = torch.from_numpy(clip).permute(0, 3, 1, 2)[None]  # (1, T, 3, H, W)
    lengths = torch.tensor([x.shape[1]])
    with torch.inference_mode():
        return clf.model(to_model_input(x, lengths, clf.preprocess), lengths).softmax(dim=1)[0]


def test_predict_reports_the_mean_of_the_views_probabilities(trained, synth_data):
    from vidclf.checkpoint import load_classifier

    clf = load_classifier(trained, device=torch.device("cpu"))
    pre = clf.preprocess
    path = str(sorted(synth_data.rglob("*.mp4"))[0])
    result = invoke("predict", path, "--model", trained, "--clips", "3", "--crops", "3", "--format", "jsonl",
                    "--workers", "0", "--top-k", "3")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    views, length = load_views(path, num_frames=pre.num_frames, size=pre.size, stride=pre.frame_stride,
                                     clips=3, crops=3)
    mean = torch.stack([_probs(clf, v[:length]) for v in views[1:]]).mean(dim=0)
    expected = {clf.classes[i]: float(p) for i, p in enumerate(mean)}
    assert {t["label"]: t["score"] for t in record["topk"]} == pytest.approx(expected, abs=1e-5)


def test_clip_accuracy_is_the_single_centre_clip_run(trained, synth_data):
    args = ["evaluate", "--model", trained, "--data", synth_data, "--split", "all", "--format", "json", "--workers", "0"]
    single = json.loads(invoke(*args, "--clips", "1").stdout)
    views = json.loads(invoke(*args, "--clips", "3", "--crops", "3").stdout)
    assert views["clip_accuracy"] == single["accuracy"] == single["clip_accuracy"]
    assert views["views"] == {"clips": 3, "crops": 3} and views["num_clips"] == single["num_clips"] == 18
