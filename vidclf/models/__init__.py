"""The architectures, by name: `build_model(name, num_classes, **config)` makes any of them.

Every model takes float (B, T, C, H, W) clips and, optionally, their lengths (B,) (without them
every clip is T frames long, so `model(x)` works as for any torchvision model) and returns logits
(B, num_classes); `forward_features` and `forward_head` are separate, and `model.config` is the
dataclass that rebuilds it (`build_model(name, n, **asdict(model.config))`).
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


def build_model(name: str, num_classes: int, **config) -> nn.Module:
    """Build architecture `name`; options set to None keep their defaults (handy for CLI options)."""
    config_class, builder = _lookup(name)
    known = {f.name for f in fields(config_class)}
    unknown = sorted(k for k, v in config.items() if v is not None and k not in known)
    if unknown:
        raise ValueError(f"{name} has no option {', '.join(unknown)}; its options are {', '.join(sorted(known))}")
    cfg = config_class(**{k: v for k, v in config.items() if v is not None})
    return builder(num_classes, cfg)


def model_options(name: str) -> list[tuple[str, str, object, str]]:
    """(option, type, default, help) for each field of the architecture's config."""
    config_class, _ = _lookup(name)
    rows = []
    for f in fields(config_class):
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        rows.append((f.name, str(f.type), default, f.metadata.get("help", "")))
    return rows


from vidclf.models import cnn_lstm, conv_recurrent  # noqa: E402,F401  (they register themselves)
