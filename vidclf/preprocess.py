"""Turning uint8 clips into model input on the device, identically in train, evaluate and predict.

The settings travel in every checkpoint (`Preprocess`), so predict sees frames exactly as training did.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

INPUT_MODES = ("rgb", "diff", "rgb+diff")

@dataclass
class Preprocess:
    num_frames: int = 16  # frames sampled per clip (T)
    size: int = 64  # frames are resized to size×size when decoded
    sampling: str = "center"  # how evaluate/predict pick frames: the centre clip, at the training stride
    frame_stride: int = 1  # gap between frames of a random training clip
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)  # per-channel, on the 0–1 scale
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)
    interpolation: str = "linear"  # cv2.INTER_LINEAR: 10× faster than INTER_AREA at 640×480 → 112²
    input: str = "rgb+diff"  # rgb | diff (x_t − x_(t−1)) | rgb+diff (both, 6 channels): see README for why

def in_channels(input_mode: str) -> int:
    if input_mode not in INPUT_MODES:
        raise ValueError(f"--input should be one of {', '.join(INPUT_MODES)}, got {input_mode!r}")
    return 6 if input_mode == "rgb+diff" else 3

def channels_first(clips: torch.Tensor) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) as decoded and batched → (B, T, 3, H, W), a view: done on the device, so
    no CPU process spends a strided copy per batch on it."""
    return clips.permute(0, 1, 4, 2, 3)

def time_mask(lengths: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(B, T) bool, True on a clip's real frames."""
    return torch.arange(num_frames, device=lengths.device)[None, :] < lengths[:, None]

def augment(x: torch.Tensor, *, generator: torch.Generator, hflip: bool = False) -> torch.Tensor:
    """Random crop/scale and colour jitter, the same for every frame of a clip so motion is kept.

    x: float (B, T, 3, H, W) in 0–1. Horizontal flip is off by default: it turns 'left' into 'right'.
    """
    B, T, C, H, W = x.shape  # batch, time, channels, height, width
    dev = x.device

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(B, generator=generator, device=dev)

    scale = uniform(0.75, 1.0).sqrt()  # side of the crop as a fraction of the frame (area 75–100%)
    shift_x = (1 - scale) * uniform(-1, 1)
    shift_y = (1 - scale) * uniform(-1, 1)
    sign = torch.ones(B, device=dev)
    if hflip:
        sign = torch.where(torch.rand(B, generator=generator, device=dev) < 0.5, -sign, sign)
    theta = torch.zeros(B, 2, 3, device=dev, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = scale * sign, shift_x
    theta[:, 1, 1], theta[:, 1, 2] = scale, shift_y
    theta = theta.repeat_interleave(T, dim=0)  # (B*T, 2, 3): one crop per clip
    frames = x.reshape(B * T, C, H, W)
    grid = F.affine_grid(theta, [B * T, C, H, W], align_corners=False)
    frames = F.grid_sample(frames, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    x = frames.reshape(B, T, C, H, W)
    brightness = uniform(-0.1, 0.1).view(B, 1, 1, 1, 1)
    contrast = uniform(0.8, 1.2).view(B, 1, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3, 4), keepdim=True)
    return ((x - mean) * contrast + mean + brightness).clamp(0, 1)

def to_model_input(
    clips: torch.Tensor,
    lengths: torch.Tensor,
    pre: Preprocess,
    *,
    generator: torch.Generator | None = None,
    hflip: bool = False,
) -> torch.Tensor:
    """uint8 (B, T, 3, H, W) on the device → float (B, T, C, H, W); augments when given a generator.

    Differences are taken after normalisation and only inside a clip's true length; padded frames
    are zero, so padding never leaks into the input.
    """
    x = clips.float().div_(255)
    if generator is not None:
        x = augment(x, generator=generator, hflip=hflip)
    return normalise(x, lengths, pre)

def normalise(x: torch.Tensor, lengths: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """float (B, T, 3, H, W) in 0–1 → model input (B, T, C, H, W): normalised, padding zeroed, differences
    added. Apart from `to_model_input` for a training stream, whose clips are augmented one by one and
    then joined, so that the differences run across the joins as in a real stream (online.py)."""
    mean = x.new_tensor(pre.mean).view(1, 1, 3, 1, 1)
    std = x.new_tensor(pre.std).view(1, 1, 3, 1, 1)
    x = (x - mean) / std
    mask = time_mask(lengths, x.shape[1]).view(*x.shape[:2], 1, 1, 1).to(x.dtype)
    x = x * mask
    if pre.input == "rgb":
        return x
    diff = torch.zeros_like(x)
    diff[:, 1:] = (x[:, 1:] - x[:, :-1]) * mask[:, 1:]
    if pre.input == "diff":
        return diff
    if pre.input == "rgb+diff":
        return torch.cat([x, diff], dim=2)
    raise ValueError(f"input should be one of {', '.join(INPUT_MODES)}, got {pre.input!r}")

def step_seed(seed: int, epoch: int, step: int) -> int:
    """A seed per training step, so that a resumed run draws exactly what the uninterrupted one did."""
    return (seed * 1_000_003 + epoch * 10_007 + step) % (2**63 - 1)

