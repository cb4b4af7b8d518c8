"""`predict --timeline`: segments of one label from per-frame labels, by windows for clip-trained checkpoints."""

from __future__ import annotations

import json

import numpy as np
import torch

from tests.test_cli import invoke
from vidclf.timeline import follow_metrics, segments


def test_segments_of_a_known_label_sequence():
    labels = [0, 0, 0, 2, 2, 1, 1, 1, 1, 0]
    probs = torch.full((len(labels), 3), 0.1)
    for i, label in enumerate(labels):
        probs[i, label] = 0.6 + 0.01 * i
    times = [i / 25 for i in range(len(labels))]
    got = segments(times, probs, ["a", "b", "c"], interval=0.04)
    assert [(s["start"], s["end"], s["label"]) for s in got] == [
        (0.0, 0.12, "a"), (0.12, 0.2, "c"), (0.2, 0.36, "b"), (0.36, 0.4, "a")]
    assert got[0]["score"] == round(0.61, 6) and got[2]["score"] == round(0.665, 6)  # the label's mean over the run
    smoothed = segments(times, probs, ["a", "b", "c"], interval=0.04, min_frames=3)  # "c" lasts 2 frames, the last "a" 1
    assert [(s["start"], s["end"], s["label"]) for s in smoothed] == [(0.0, 0.2, "a"), (0.2, 0.4, "b")]
    assert smoothed[0]["score"] == round(float(probs[:5, 0].mean()), 6)  # "a"'s probability over its frames
    (one,) = segments([0.0], probs[:1], ["a", "b", "c"], interval=0.04)
    assert (one["start"], one["end"]) == (0.0, 0.04)


def test_a_clip_trained_checkpoint_labels_frames_by_the_clip_ending_there(trained, tmp_path):
    from vidclf.synth import write_dataset

    (clip,) = write_dataset(tmp_path, classes=1, clips_per_class=1, frames=30, size=32, seed=1)
    result = invoke("predict", clip, "--model", trained, "--timeline", "--device", "cpu", "-f", "jsonl")
    assert result.exit_code == 0, result.output
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    timeline = record["timeline"]
    assert timeline[0]["start"] == 0.28 and timeline[-1]["end"] == 1.2  # from the first full 8-frame span to the end
    assert all(a["end"] == b["start"] and a["label"] != b["label"] for a, b in zip(timeline, timeline[1:]))
    short, _ = write_dataset(tmp_path / "short", classes=1, clips_per_class=2, frames=4, size=32, seed=1)
    result = invoke("predict", short, tmp_path / "missing.mp4", "--model", trained, "--timeline", "-f", "jsonl")
    errors = [json.loads(line)["error"] for line in result.stdout.splitlines()]
    assert result.exit_code == 1 and "shorter than the model's clip span (8 frames)" in errors[0] and "no such file" in errors[1]
    both = invoke("predict", clip, "--model", trained, "--timeline", "--window", "1")
    assert both.exit_code == 2 and "--timeline or --window" in both.output


def test_following_a_change_is_scored_from_known_labels():
    truth = np.array([0] * 20 + [1] * 30 + [2] * 10)
    top = truth.copy()
    top[20:25] = 0  # follows the change at 20 after 5 frames
    top[40] = 2  # wrong once, settled
    top[50:] = 1  # never follows the change at 50
    got = follow_metrics(truth, top, after=0)
    assert got["frames"] == 60 and got["changes"] == 2
    assert got["accuracy"] == (60 - 5 - 1 - 10) / 60
    assert got["after_change"] == 1.0  # frame 36 right; the 10-frame segment has no 16th frame
    assert got["settled"] == 13 / 14  # frames 36-49, frame 40 wrong
    assert got["follow_frames"] == (5 + 10) / 2  # a segment never followed counts its length
    assert follow_metrics(truth, top, after=30)["changes"] == 1  # changes before the first labelled frame do not count
