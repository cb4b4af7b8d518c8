"""Checkpoints as plain dicts: written atomically, read without ever executing code from them."""

from __future__ import annotations

import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vidclf import __version__
from vidclf.errors import CheckpointError, WriteError
from vidclf.multilabel import DEFAULT_THRESHOLD
from vidclf.preprocess import Preprocess

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "model", "classes", "preprocess", "state_dict")


def save(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Write to a temporary file in the same folder, then rename: a crash never leaves half a file, and
    a write that fails (a full disk, a read-only folder) leaves the previous file as it was and raises
    a WriteError that names the file and the OS's reason.

    A training checkpoint (one with "train_config") also records under "decoder" the OpenCV and FFmpeg
    build of this process, the one that decoded its training frames, unless the caller gave one.
    """
    path = Path(path)
    checkpoint = {"format_version": FORMAT_VERSION, "vidclf_version": __version__, **checkpoint}
    if "train_config" in checkpoint and "decoder" not in checkpoint:
        from vidclf.data.provenance import decoder_build

        checkpoint["decoder"] = decoder_build()
    try:
        _write(checkpoint, path)
    except Exception as err:
        cause = _os_error(err)
        if cause is None:
            raise
        raise WriteError(path, cause) from err


def _os_error(err: BaseException | None) -> OSError | None:
    """The OSError behind `err`. torch.save reports a write that failed into a file object as a
    RuntimeError ("[enforce fail at inline_container.cc] unexpected pos …") raised while handling the
    file's own OSError (ENOSPC, say), so the reason is found in the exception's context."""
    while err is not None and not isinstance(err, OSError):
        err = err.__cause__ or err.__context__
    return err


def _write(checkpoint: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with `weights_only=True`, so a crafted file cannot run code, and check the schema."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":  # torch.save has written zip archives since torch 1.6
            raise CheckpointError(f"{path}: not a checkpoint file (not the zip archive torch.save writes)")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: refused to load, it holds more than plain data ({first})") from None
    except Exception as err:  # torch raises RuntimeError, EOFError, zipfile errors … for non-checkpoints
        raise CheckpointError(f"{path}: not a checkpoint file ({type(err).__name__}: {err})") from None
    if not isinstance(checkpoint, dict) or any(k not in checkpoint for k in REQUIRED_KEYS):
        raise CheckpointError(f"{path}: not a vidclf checkpoint (missing {', '.join(REQUIRED_KEYS)})")
    version = checkpoint["format_version"]
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {version} is not supported by vidclf {__version__} "
            f"(expected {FORMAT_VERSION})"
        )
    return checkpoint


@dataclass
class Classifier:
    """What evaluate and predict need from a checkpoint: the model, its classes and its preprocessing."""

    model: torch.nn.Module
    classes: list[str]
    preprocess: Preprocess
    path: Path
    decoder: dict[str, str] | None = None  # the decoder build that read its training frames; None: not recorded
    start: dict | None = None  # where its weights started (start.record); None: not recorded
    multi_label: bool = False  # a sigmoid per label, so a video may carry any set of them
    thresholds: list[float] | None = None  # multi-label: a label is present at or above its threshold
    online: bool = False  # trained for streams (train --online): it reads them one step a frame

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Scores (…, classes) of logits: a softmax over classes, or each label's own sigmoid."""
        return logits.sigmoid() if self.multi_label else logits.softmax(dim=-1)


def load_classifier(path: str | Path, *, device: torch.device) -> Classifier:
    """Rebuild the trained model from the checkpoint alone, in eval mode on `device`."""
    from vidclf.models import build_model

    ckpt = load(path)
    spec = ckpt["model"]
    try:
        # The state_dict holds the weights: pretrained ones are not fetched again.
        model = build_model(spec["name"], spec["num_classes"], **{**spec["config"], "pretrained": None})
        model.load_state_dict(ckpt["state_dict"])
        pre = Preprocess(**{k: tuple(v) if isinstance(v, list) else v for k, v in ckpt["preprocess"].items()})
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: the checkpoint does not match this vidclf version ({err})") from None
    multi_label = bool(ckpt.get("multi_label", False))
    thresholds = [float(t) for t in ckpt.get("thresholds") or [DEFAULT_THRESHOLD] * len(ckpt["classes"])]
    online = bool(ckpt.get("train_config", {}).get("online", False))
    return Classifier(model.to(device).eval(), list(ckpt["classes"]), pre, Path(path), ckpt.get("decoder"),
                      ckpt.get("start"), multi_label, thresholds if multi_label else None, online)


def newest_best(root: str | Path) -> Path:
    """The most recently written best.pt below `root`: what `predict` uses when no model is named."""
    candidates = sorted(Path(root).rglob("best.pt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise CheckpointError(f"{root}: no best.pt found; train a model first or pass --model")
    return candidates[-1]
