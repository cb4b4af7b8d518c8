"""`predict --timeline`: segments of one label from per-frame labels, by windows for clip-trained checkpoints."""

from __future__ import annotations

import json

import torch

from tests.test_cli import invoke
from vidclf.timeline import segments


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
