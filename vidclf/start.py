"""Where a run's weights start: from scratch, an architecture's pretrained weights (`--pretrained`), or
another vidclf checkpoint (`--init`); and what follows from the start: the frames the weights expect,
which parameters are the pretrained body (a smaller rate, `--backbone-lr`), and what the checkpoint records.

A few hundred clips cannot teach a network what video looks like; weights that already know it can be
taught the user's classes. Those weights were trained on frames prepared one way (mean, std, size,
frame count), so the run's defaults follow them, and an option that contradicts them is said.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from vidclf import checkpoint
from vidclf.errors import CheckpointError
from vidclf.preprocess import Preprocess

DEFAULT_ARCH = "cnn-lstm"
HEAD = "head."  # every architecture's classifier is its `head`: the part a new set of classes replaces
# Options that describe how to train, not what the network is: --init may change them.
TRAINING_OPTIONS = ("freeze_backbone", "dropout")


@dataclass(frozen=True)
class Shape:
    """What the input of a new run looks like: its architecture, options and frames."""

    arch: str
    model: dict  # architecture options
    num_frames: int
    size: int
    input: str
    mean: tuple[float, float, float] | None = None  # None: vidclf's own normalisation
    std: tuple[float, float, float] | None = None


def resolve(*, arch: str | None, model: dict, init: str | None, num_frames: int | None, size: int | None,
            input: str | None, say: Callable[[str], None]) -> Shape:
    """The shape of a new run from the options given (None: not given). An --init checkpoint decides the
    architecture, its options and the input, and its frames and size are the defaults; pretrained weights
    decide mean and std, and their frames and size are the defaults. Raises ValueError or CheckpointError
    where an option contradicts the start; says a warning where it merely differs."""
    if init is not None:
        return _from_checkpoint(init, arch=arch, model=model, num_frames=num_frames, size=size, input=input)
    arch = arch or DEFAULT_ARCH
    expected = _weights_preprocess(arch, model.get("pretrained"))
    if expected is None:
        return Shape(arch, model, num_frames or Preprocess.num_frames, size or Preprocess.size, input or Preprocess.input)
    if expected.fixed:
        for flag, given, wanted in (("--frames", num_frames, expected.frames), ("--size", size, expected.size)):
            if given is not None and given != wanted:
                raise ValueError(f"{arch} takes {expected.frames} frames of {expected.size}×{expected.size}; "
                                 f"got {flag} {given}")
    elif size is not None and size != expected.size:
        say(f"[yellow]warning[/] {arch}'s weights ({model['pretrained']}) were trained on frames of "
            f"{expected.size}×{expected.size}; --size {size} differs from that")
    # The frame count follows the network only where it fixes one: the weights' own clip lengths (128 for
    # s3d's, 32 for swin3d_t's) describe how they were scored, and cost far more than vidclf's default.
    frames = num_frames or (expected.frames if expected.fixed else Preprocess.num_frames)
    return Shape(arch, model, frames, size or expected.size, input or Preprocess.input,
                 tuple(expected.mean), tuple(expected.std))


def _weights_preprocess(arch: str, pretrained: str | None):
    from vidclf.models import weights_preprocess

    return weights_preprocess(arch, pretrained)


def _from_checkpoint(path: str, *, arch: str | None, model: dict, num_frames: int | None, size: int | None,
                     input: str | None) -> Shape:
    if model.get("pretrained"):
        raise ValueError("give --init or --pretrained, not both: --init starts from the checkpoint's weights")
    saved = checkpoint.load(path)
    spec, pre = saved["model"], saved["preprocess"]
    wrong = []
    if arch is not None and arch != spec["name"]:
        wrong.append(f"--arch {spec['name']}")
    if input is not None and input != pre["input"]:
        wrong.append(f"--input {pre['input']}")
    config = {k: v for k, v in spec["config"].items() if k not in ("in_channels", "pretrained", *TRAINING_OPTIONS)}
    for key, value in model.items():
        if key in config and _plain(value) != _plain(config[key]):
            wrong.append(f"{key}={config[key]}")
    if wrong:
        raise CheckpointError(f"{path}: --init starts from a network trained with {', '.join(wrong)}; "
                              f"leave those options out (they follow the checkpoint) or start another way")
    options = {**config, **{k: v for k, v in model.items() if k in TRAINING_OPTIONS}}
    return Shape(spec["name"], options, num_frames or pre["num_frames"], size or pre["size"], pre["input"],
                 tuple(pre["mean"]), tuple(pre["std"]))


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def apply_init(model: torch.nn.Module, path: str | Path, classes: list[str]) -> str:
    """Load an --init checkpoint's weights into `model`; its head too when the classes are the same
    (continuing to learn them), a new head otherwise. Returns what was done, for the user."""
    saved = checkpoint.load(path)
    state = saved["state_dict"]
    same = list(saved["classes"]) == list(classes)
    if not same:
        state = {k: v for k, v in state.items() if not k.startswith(HEAD)}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shapes of another configuration
        raise CheckpointError(f"{path}: its weights do not fit this network ({str(err).splitlines()[-1].strip()})") from None
    missing = [k for k in missing if not k.startswith(HEAD)]
    if missing or unexpected:
        raise CheckpointError(f"{path}: its weights do not fit this network "
                              f"(missing {', '.join(missing[:3]) or 'none'}; unexpected {', '.join(unexpected[:3]) or 'none'})")
    if same:
        return f"starting from {path} (its classes and head kept)"
    return (f"starting from {path}: its body, and a new head for {len(classes)} classes "
            f"(it was trained on {len(saved['classes'])}: {', '.join(saved['classes'][:5])}{' …' if len(saved['classes']) > 5 else ''})")


def param_groups(model: torch.nn.Module, *, lr: float, backbone_lr: float) -> list[dict]:
    """The head at `lr`, the rest at `lr × backbone_lr`: weights that already know video should move
    less than a new head. One group when both rates are the same (older runs resume as they were saved)."""
    named = list(model.named_parameters())  # frozen ones too (AdamW skips them): older last.pt files list them
    if backbone_lr == 1.0:
        return [{"params": [p for _, p in named], "lr": lr}]
    head = [p for name, p in named if name.startswith(HEAD)]
    body = [p for name, p in named if not name.startswith(HEAD)]
    return [{"params": head, "lr": lr}, {"params": body, "lr": lr * backbone_lr}]


def record(cfg) -> dict:
    """What a checkpoint says about where its weights started."""
    return {"init": cfg.init, "pretrained": cfg.model.get("pretrained")}


def describe(start: dict | None) -> str:
    """One line for `summary --model`."""
    if not start or not (start.get("init") or start.get("pretrained")):
        return "started from scratch" if start else "where its weights started is not recorded (an earlier vidclf wrote it)"
    parts = []
    if start.get("pretrained"):
        parts.append(f"pretrained weights {start['pretrained']}")
    if start.get("init"):
        parts.append(f"the checkpoint {start['init']} (--init)")
    return "started from " + " and ".join(parts)
