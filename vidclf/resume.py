"""What a continued run trains with: its saved settings, and the few options that may change between its parts.

A run continues exactly only with the recipe it started with, so the saved one is kept; what says
where and how to run it (devices, workers, the cache, the data's path, the epochs to reach) may change.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path

from vidclf import checkpoint
from vidclf.errors import CheckpointError
from vidclf.run import TrainConfig

# Options that may differ from the saved run's: they change where and how it runs, not what it learns
# (--epochs changes the schedule's length, and --data a moved copy of the same classes; both are said).
RUNTIME = ("device", "precision", "workers", "cache", "cache_size", "decode_timeout", "save_every", "compile", "out",
           "tensorboard")
SAID = ("epochs", "data")
# Options that make the saved weights or preprocessing wrong: continuing with other values is an error.
MODEL = ("arch", "model", "num_frames", "size", "input", "mean", "std", "multi_label")


def resume_state(path: str | Path) -> dict:
    """A last.pt's contents, refused when it holds no training state (a best.pt, say)."""
    ckpt = checkpoint.load(path)
    if "train_config" not in ckpt or "optimizer" not in ckpt:
        raise CheckpointError(f"{path}: holds no training state to resume from (use a last.pt)")
    return ckpt


def resume_config(path: str | Path, **overrides) -> TrainConfig:
    """The saved run's configuration, with `overrides` (epochs, device, workers …) that are not None."""
    return TrainConfig(**{**_saved_config(path), **{k: v for k, v in overrides.items() if v is not None}})


def continue_config(path: str | Path, asked: TrainConfig) -> tuple[TrainConfig, str | None]:
    """The configuration that continues the run of `path` when the command asks for `asked`, and a
    warning naming the options that differ from the saved run's (None when none do).

    Raises CheckpointError when an option that shapes the model differs: continuing would be wrong.
    """
    saved, wanted = _saved_config(path), asdict(asked)
    differs = [k for k in saved if _comparable(saved[k]) != _comparable(wanted[k])]
    wrong = [k for k in differs if k in MODEL]
    if wrong:
        raise CheckpointError(f"{path}: the run was trained with {_options(wrong, saved)}; continuing it with "
                              f"{_options(wrong, wanted)} would be wrong: give another --name")
    applied = [k for k in differs if k in SAID]
    ignored = [k for k in differs if k not in SAID and k not in RUNTIME]
    config = TrainConfig(**{**saved, **{k: wanted[k] for k in RUNTIME + SAID}})
    parts = []
    if applied:
        parts.append(f"continues with {_listing(applied, saved, wanted)}")
    if ignored:
        parts.append(f"keeps its recipe and ignores {_listing(ignored, saved, wanted)}; "
                     "another --name starts a run with them")
    return config, f"{path}: " + "; ".join(parts) if parts else None


def _saved_config(path: str | Path) -> dict:
    known = {f.name for f in fields(TrainConfig)}
    return {k: v for k, v in resume_state(path)["train_config"].items() if k in known}


def _comparable(value):
    """Saved configurations come back with lists where the options gave tuples."""
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items() if v is not None}
    return list(value) if isinstance(value, tuple) else value


def _options(keys: list[str], values: dict) -> str:
    return ", ".join(f"--{k.replace('_', '-')} {values[k]}" for k in keys)


def _listing(keys: list[str], saved: dict, wanted: dict) -> str:
    return ", ".join(f"{_options([k], wanted)} (saved: {saved[k]})" for k in keys)
