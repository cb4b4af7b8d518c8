"""The models learn motion from the embedded dataset, and one frame alone does not suffice.

Training clips stream from `render_clip` (fresh, seeded clips every step: a fixed set of ~30 clips
per class is memorised long before motion is learnt), validation is a fixed held-out set.
Runs on CPU in tens of seconds per model; deterministic for the seeds below.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidclf.models import build_model
from vidclf.preprocess import Preprocess, in_channels, to_model_input
from vidclf.synth import render_clip, task_classes

FRAMES, SIZE, BATCH = 12, 32, 16
DEFAULT_INPUT = Preprocess().input
pytestmark = pytest.mark.slow


def _clips(rng: np.random.Generator, n: int, *, task: str, input_mode: str, frames: int = FRAMES):
    """n fresh clips, preprocessed as vidclf does: (float (n, frames, C, H, W), labels (n,))."""
    labels = rng.integers(0, len(task_classes(task)), n)
    x = np.stack([render_clip(int(y), task=task, frames=FRAMES, size=SIZE, rng=rng) for y in labels])  # (n, T, H, W, 3)
    x = torch.from_numpy(x[:, :frames]).permute(0, 1, 4, 2, 3)  # uint8 (n, frames, 3, H, W)
    pre = Preprocess(num_frames=frames, size=SIZE, input=input_mode)
    return to_model_input(x, torch.full((n,), frames), pre), torch.from_numpy(labels)


def _train(arch: str, *, task: str = "motion", input_mode: str = "rgb", max_steps: int, target: float,
           frames: int = FRAMES, **options) -> float:
    """Train until validation accuracy reaches `target` (checked every 25 steps) or `max_steps`."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_model(arch, len(task_classes(task)), in_channels=in_channels(input_mode), **options)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    xv, yv = _clips(np.random.default_rng(12345), 120, task=task, input_mode=input_mode, frames=frames)
    acc = 0.0
    for step in range(1, max_steps + 1):
        x, y = _clips(rng, BATCH, task=task, input_mode=input_mode, frames=frames)
        model.train()
        loss = F.cross_entropy(model(x, torch.full((BATCH,), frames)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0:
            model.eval()
            with torch.no_grad():
                acc = (model(xv, torch.full((len(yv),), frames)).argmax(1) == yv).float().mean().item()
            if acc >= target:
                break
    print(f"{arch} {task} {input_mode} frames={frames}: {acc:.1%} validation accuracy after {step} steps")
    return acc


@pytest.mark.parametrize("arch,max_steps", [("cnn-lstm", 450), ("convgru", 250), ("convlstm", 350)])
def test_learns_motion(arch, max_steps):
    assert _train(arch, max_steps=max_steps, target=0.9) >= 0.9


def test_single_frame_control_stays_near_chance():
    assert _train("cnn-lstm", max_steps=450, target=2.0, frames=1) <= 0.4  # chance is 1/6; as many steps as above


def test_default_input_learns_speed_that_one_frame_cannot():
    assert _train("cnn-lstm", task="speed", input_mode=DEFAULT_INPUT, max_steps=300, target=0.9) >= 0.9
    one_frame = _train("cnn-lstm", task="speed", input_mode=DEFAULT_INPUT, max_steps=300, target=2.0, frames=1)
    assert one_frame <= 0.65  # chance is 1/2


def test_convgru_learns_the_multi_label_task():
    """Two shapes a clip, each moving as one of three motions or still: a sigmoid per label trained with
    BCE ranks every label right (mAP) once it has learnt motion, whatever the other shape does."""
    from vidclf.multilabel import bce_loss, mean_average_precision
    from vidclf.synth import CLASSES, multi_label_sets, render_multi

    names = CLASSES[:3]
    sets = multi_label_sets(names)

    def clips(rng: np.random.Generator, n: int):
        picks = rng.integers(0, len(sets), n)
        x = np.stack([render_multi(sets[k], frames=FRAMES, size=SIZE, rng=rng) for k in picks])  # (n, T, H, W, 3)
        x = torch.from_numpy(x).permute(0, 1, 4, 2, 3)  # uint8 (n, T, 3, H, W)
        targets = torch.tensor([[int(c in sets[k]) for c in names] for k in picks])
        return to_model_input(x, torch.full((n,), FRAMES), Preprocess(num_frames=FRAMES, size=SIZE, input="rgb")), targets

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_model("convgru", len(names), in_channels=3)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    xv, yv = clips(np.random.default_rng(12345), 90)
    score = 0.0
    for step in range(1, 151):  # 75 steps on the seed below
        x, y = clips(rng, BATCH)
        model.train()
        loss = bce_loss(model(x, torch.full((BATCH,), FRAMES)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0:
            model.eval()
            with torch.no_grad():
                score = mean_average_precision(model(xv, torch.full((len(yv),), FRAMES)).sigmoid(), yv, names)["map"]
            if score >= 0.9:
                break
    print(f"convgru multi rgb: mAP {score:.3f} after {step} steps")
    assert score >= 0.9
