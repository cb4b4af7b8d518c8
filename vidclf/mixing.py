"""Mixup and CutMix on clips: pairs of training clips blended, and their labels with them.

The blend is the same in every frame, so each clip keeps its own motion: mixup superposes two
clips, cutmix pastes one box of the partner clip (the same box through time) into each clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MIX_KINDS = ("none", "mixup", "cutmix")


@dataclass
class Mixed:
    x: torch.Tensor  # the blended model input (B, T, C, H, W)
    lengths: torch.Tensor  # the longer of each pair's lengths: no frame of either clip is cut
    partner_labels: torch.Tensor  # (B,) the label of the clip blended into each clip
    weight: float  # the share of each clip's own label; 1 − weight goes to its partner's


def check_mix(kind: str, alpha: float) -> None:
    """Raise on a kind or weight that `mix_clips` cannot use, so that training fails before reading data."""
    if kind not in MIX_KINDS:
        raise ValueError(f"--mix should be one of {', '.join(MIX_KINDS)}, got {kind!r}")
    if kind != "none" and alpha <= 0:
        raise ValueError(f"--mix-alpha should be > 0, got {alpha}")


def mix_clips(x: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor, *, kind: str, alpha: float,
              generator: torch.Generator) -> Mixed:
    """Blend each clip with a partner from the same batch; the weight is drawn from Beta(alpha, alpha).

    The weight comes from torch's global generator (the training step seeds it), the partners and
    the box from `generator`.
    """
    check_mix(kind, alpha)
    if kind == "none":
        raise ValueError("mix_clips needs mixup or cutmix, got 'none'")
    weight = float(torch.distributions.Beta(alpha, alpha).sample())
    partner = torch.randperm(len(x), generator=generator, device=generator.device).to(x.device)
    mixed = x.clone()
    if kind == "mixup":
        mixed.mul_(weight).add_(x[partner], alpha=1 - weight)
    else:
        H, W = x.shape[-2:]
        side = (1 - weight) ** 0.5  # the box covers 1 − weight of the frame, before clipping at the edges
        cy, cx = (int(torch.randint(n, (1,), generator=generator, device=generator.device)) for n in (H, W))
        y0, y1 = max(cy - round(H * side / 2), 0), min(cy + round(H * side / 2), H)
        x0, x1 = max(cx - round(W * side / 2), 0), min(cx + round(W * side / 2), W)
        mixed[..., y0:y1, x0:x1] = x[..., y0:y1, x0:x1][partner]
        weight = 1 - (y1 - y0) * (x1 - x0) / (H * W)  # the share the clip really kept
    return Mixed(mixed, torch.maximum(lengths, lengths[partner]), labels[partner], weight)
