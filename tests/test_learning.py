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
from vidclf.synth import CLASSES, render_clip

FRAMES, SIZE, BATCH = 12, 32, 16
K = len(CLASSES)
pytestmark = pytest.mark.slow


def _clips(rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    labels = rng.integers(0, K, n)
    x = np.stack([render_clip(int(y), frames=FRAMES, size=SIZE, rng=rng) for y in labels])  # (n, T, H, W, 3)
    x = torch.from_numpy(x).permute(0, 1, 4, 2, 3).float()  # (n, T, 3, H, W)
    return (x / 255 - 0.5) / 0.25, torch.from_numpy(labels)


@pytest.fixture(scope="module")
def val() -> tuple[torch.Tensor, torch.Tensor]:
    return _clips(np.random.default_rng(12345), 120)


def _train(arch: str, val, *, max_steps: int, target: float, frames: int = FRAMES, **options) -> float:
    """Train until validation accuracy reaches `target` (checked every 25 steps) or `max_steps`."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_model(arch, K, **options)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    xv, yv = val[0][:, :frames], val[1]
    acc = 0.0
    for step in range(1, max_steps + 1):
        x, y = _clips(rng, BATCH)
        x = x[:, :frames]
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
    print(f"{arch} frames={frames}: {acc:.1%} validation accuracy after {step} steps")
    return acc


@pytest.mark.parametrize("arch,max_steps", [("cnn-lstm", 450), ("convgru", 250), ("convlstm", 350)])
def test_learns_motion(arch, max_steps, val):
    assert _train(arch, val, max_steps=max_steps, target=0.9) >= 0.9


def test_single_frame_control_stays_near_chance(val):
    assert _train("cnn-lstm", val, max_steps=150, target=2.0, frames=1) <= 0.4  # chance is 1/6
