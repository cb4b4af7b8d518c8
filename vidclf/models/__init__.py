"""The architectures, by name: `build_model(name, num_classes, **config)` makes any of them.

Every model takes float (B, T, C, H, W) clips and, optionally, their lengths (B,) (without them
every clip is T frames long, so `model(x)` works as for any torchvision model) and returns logits
(B, num_classes); `forward_features` and `forward_head` are separate, and `model.config` is the
dataclass that rebuilds it (`build_model(name, n, **asdict(model.config))`), and `model.head` is the
classifier a new set of classes replaces. `weights_preprocess(name, pretrained)` says how frames must look
for an architecture's pretrained weights (mean, std, size, frames), or None.

Recurrent: cnn-lstm (cnn_lstm.py), convgru, convlstm, convrnn (conv_recurrent.py). Those that read forwards
(`can_step`) also read a stream frame by frame: `initial_state(frame)` and `forward_steps(x, state)` →
(logits after every frame, the next state), the state a tuple of batch-first tensors passed in and out. torchvision's Kinetics-400
networks (video_nets.py): r3d_18, mc3_18, r2plus1d_18, s3d, mvit_v2_s, swin3d_t. Shared weight loading and
first-conv widening: weights.py.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Callable

import torch
from torch import nn

MODELS: dict[str, tuple[type, Callable[..., nn.Module]]] = {}


def register(name: str, config_class: type):
    """Add a model builder `fn(num_classes, config) -> nn.Module` to the registry under `name`."""

    def add(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS[name] = (config_class, fn)
        return fn

    return add


def _lookup(name: str) -> tuple[type, Callable[..., nn.Module]]:
    if name not in MODELS:
        raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(sorted(MODELS))}")
    return MODELS[name]


def lengths_or_full(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """`lengths` as given, or T for every clip of x (B, T, …)."""
    if lengths is not None:
        return lengths
    return torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)


def can_step(model: nn.Module) -> bool:
    """Whether `model` reads a stream one frame at a time, its state carried (`initial_state`,
    `forward_steps`): the recurrent models that read forwards; not the 3D networks, which see whole clips."""
    return getattr(model, "stepwise", False)


def build_model(name: str, num_classes: int, **config) -> nn.Module:
    """Build architecture `name`; options set to None keep their defaults (handy for CLI options)."""
    config_class, builder = _lookup(name)
    known = {f.name for f in fields(config_class)}
    unknown = sorted(k for k, v in config.items() if v is not None and k not in known)
    if unknown:
        raise ValueError(f"{name} has no option {', '.join(unknown)}; its options are {', '.join(sorted(known))}")
    cfg = config_class(**{k: v for k, v in config.items() if v is not None})
    return builder(num_classes, cfg)


def input_options(name: str, *, in_channels: int, num_frames: int) -> dict:
    """The options that follow a run's input: its channels, and for a network that takes a fixed clip
    length (the 3D ones), the run's frames, so its clips go in as they are."""
    config_class, _ = _lookup(name)
    takes_frames = any(f.name == "frames" for f in fields(config_class))
    return {"in_channels": in_channels, **({"frames": num_frames} if takes_frames else {})}


def model_options(name: str) -> list[tuple[str, str, object, str]]:
    """(option, type, default, help) for each field of the architecture's config."""
    config_class, _ = _lookup(name)
    rows = []
    for f in fields(config_class):
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        rows.append((f.name, str(f.type), default, f.metadata.get("help", "")))
    return rows


from vidclf.models import cnn_lstm, conv_recurrent, video_nets  # noqa: E402,F401  (they register themselves)
from vidclf.models.video_nets import WeightsPreprocess, weights_preprocess  # noqa: E402,F401
