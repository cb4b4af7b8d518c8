"""`train --online`: clips joined into streams with a label per frame, the state carried across
truncated-backpropagation chunks, and a tiny model that learns to follow a change of motion."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.test_cli import invoke
from vidclf.framestep import Stepper
from vidclf.models import build_model
from vidclf.online import IGNORED, backward_sequences, join_clips
from vidclf.preprocess import Preprocess, in_channels
from vidclf.synth import CLASSES, _render_moves, render_clip, stream_labels

CPU = torch.device("cpu")
TINY_CONV = dict(stem_channels=8, hidden_channels=(8,), kernel_sizes=(3,))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_clips_are_joined_into_streams_with_a_label_per_frame():
    pre = Preprocess(num_frames=3, size=8, input="rgb+diff")
    clips = torch.stack([torch.full((3, 8, 8, 3), 40 * (i + 1), dtype=torch.uint8) for i in range(5)])  # (5, 3, H, W, 3)
    clips[1, 2] = 0  # clip 1 is a 2-frame video, padded
    seqs = join_clips(clips, torch.tensor([3, 2, 3, 3, 3]), torch.tensor([0, 1, 1, 2, 0]), pre, per_sequence=2, grace=2)
    assert seqs.x.shape == (2, 6, 6, 8, 8)  # 5 clips, 2 a sequence: 2 sequences, the odd clip left out
    rgb, diff = seqs.x[:, :, :3], seqs.x[:, :, 3:]
    assert torch.equal(rgb[0, 5], rgb[0, 4])  # the padded frame repeats the clip's last, not black
    assert (diff[0, 3] > 0).all() and (diff[1, 1:3] == 0).all() and (diff[:, 0] == 0).all()  # across the join only
    expected = torch.tensor([[0, 0, 0, IGNORED, IGNORED, 1], [1, 1, 1, 2, 2, 2]])
    expected[1, 3:5] = IGNORED  # grace 2: the first two frames after a change
    assert torch.equal(seqs.targets, expected)
    single = join_clips(clips[:1], torch.tensor([3]), torch.tensor([0]), pre, per_sequence=4)
    assert single.x.shape[:2] == (1, 3)  # fewer clips than a sequence: one shorter sequence


def test_chunks_carry_the_state_so_the_loss_equals_one_pass():
    torch.manual_seed(0)
    pre = Preprocess(num_frames=6, size=16, input="rgb+diff")
    model = build_model("cnn-lstm", 3, in_channels=6, feature_size=8, hidden_size=8, grid=2)
    clips = torch.randint(0, 256, (4, 6, 16, 16, 3), dtype=torch.uint8)
    seqs = join_clips(clips, torch.full((4,), 6), torch.tensor([0, 1, 2, 1]), pre, per_sequence=2)
    model.eval()  # BatchNorm on running statistics: chunks see the same normalisation as one pass
    losses = [backward_sequences(model, seqs, chunk=chunk, backward=lambda loss: loss.backward(), device=CPU)
              for chunk in (12, 5, 1)]
    assert all(abs(float(loss) - float(losses[0][0])) < 1e-5 and float(acc) == float(losses[0][1])
               for loss, acc in losses)


def test_a_tiny_model_learns_to_follow_a_change():
    """Trained on clips joined end to end, stepped over one continuous scene whose motion changes
    every 2–5 s: it labels the frames from the 8th after each change on (about 8 s of CPU)."""
    names, size, frames = CLASSES[:2], 32, 12
    pre = Preprocess(num_frames=frames, size=size, input="rgb+diff")
    torch.manual_seed(0)
    model = build_model("convgru", 2, in_channels=in_channels(pre.input), **TINY_CONV)
    clips = torch.from_numpy(np.stack([render_clip(i % 2, frames=frames, size=size, rng=np.random.default_rng([5, i]))
                                       for i in range(64)]))
    labels = torch.arange(64) % 2
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(80):  # 60 steps: 0.93 settled, 80: 0.98
        pick = torch.randint(0, 64, (16,), generator=gen)
        seqs = join_clips(clips[pick], torch.full((16,), frames), labels[pick], pre, per_sequence=4, generator=gen)
        optimizer.zero_grad()
        backward_sequences(model, seqs, chunk=12, backward=lambda loss: loss.backward(), device=CPU)
        optimizer.step()
    truth = stream_labels(300, 25, np.random.default_rng(3), names)
    video = _render_moves(truth[1:] + truth[-1:], size, np.random.default_rng(4))
    stepper = Stepper(model.eval(), pre, CPU, None)
    right = []
    for index, frame in enumerate(video):
        stepper.add(index, frame)
        right.append(names[int(stepper.logits(index).argmax())] == truth[index])
    changes = [0] + [t for t in range(1, len(truth)) if truth[t] != truth[t - 1]]
    settled = [right[t] for t in range(len(truth)) if t - max(c for c in changes if c <= t) >= 8]
    assert len(changes) >= 3 and np.mean(settled) >= 0.85, (np.mean(settled), np.mean(right))


def test_train_online_then_stream_steps_from_the_first_frame(tmp_path):
    from vidclf.checkpoint import load
    from vidclf.synth import write_dataset, write_streams

    write_dataset(tmp_path / "data" / "train", task="stream", classes=2, clips_per_class=4, frames=8, size=32)
    (long,) = write_streams(tmp_path / "data" / "streams", count=1, seconds=1.2, size=32, classes=2)
    args = ["train", "--data", tmp_path / "data", "--frames", "8", "--size", "32", "--epochs", "1", "--batch-size", "2",
            "--sequence-clips", "2", "--chunk", "5", "--workers", "0", "--no-cache", "--device", "cpu",
            "--out", tmp_path / "models", "--quiet"]
    conv = ["--arch", "convgru", "--hidden-channels", "8", "--kernel-sizes", "3"]
    result = invoke(*args, *conv, "--online", "--name", "run")
    assert result.exit_code == 0, result.output
    best = tmp_path / "models" / "run" / "best.pt"
    assert load(best)["train_config"]["online"] is True
    result = invoke("stream", long, "--model", best, "--hop", "0.4", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["time"] for line in result.stdout.splitlines()] == [0.0, 0.4, 0.8]  # no span to wait for
    windowed = invoke("stream", long, "--model", best, "--hop", "0.4", "--windows", "--device", "cpu")
    assert [json.loads(line)["time"] for line in windowed.stdout.splitlines()] == [0.28, 0.68, 1.08]  # from a full span
    reset = invoke("stream", long, "--model", best, "--hop", "0.4", "--reset-every", "0.4", "--device", "cpu")
    assert reset.exit_code == 0 and len(reset.stdout.splitlines()) == 3, reset.output
    result = invoke("predict", long, "--model", best, "--timeline", "--device", "cpu", "-f", "jsonl")
    timeline = json.loads(result.stdout)["timeline"]
    assert result.exit_code == 0 and timeline[0]["start"] == 0.0 and timeline[-1]["end"] == 1.2  # every frame labelled
    assert all(a["end"] == b["start"] for a, b in zip(timeline, timeline[1:]))
    result = invoke("evaluate", "--timeline", "--data", long.parent, "--model", best, "--device", "cpu", "-f", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["frames"] == 30 and report["stepwise"] and 0 <= report["accuracy"] <= 1
    (long.parent / "stream_000.labels.csv").write_text("frame,label\n0,sideways\n")
    bad = invoke("evaluate", "--timeline", "--data", long.parent, "--model", best)
    assert bad.exit_code == 1 and "labels the model does not know: sideways" in bad.stderr and bad.stderr.count("\n") == 1
    step = tmp_path / "step.pt"
    result = invoke("export", "--model", best, "--step", "-f", "torchscript", "-o", step, "--check", long)
    assert result.exit_code == 0 and json.loads(result.stdout)["max_abs_diff"] <= 1e-4 and step.is_file(), result.output
    for extra, message in ([["--arch", "cnn-lstm", "--bidirectional"], "needs a recurrent architecture that reads forwards"],
                           [[*conv, "--mix", "mixup"], "does not apply to --online"]):
        bad = invoke(*args, "--online", *extra, "--name", "bad")
        assert bad.exit_code == 1 and message in bad.stderr and bad.stderr.strip().count("\n") == 0, bad.output
