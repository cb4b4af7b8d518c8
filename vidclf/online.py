"""Training for live streams (`train --online`): clips joined end to end, a label for every frame,
truncated backpropagation through time with the state carried from chunk to chunk.

A model trained on clips from a zero state learns to name one action after T frames; nothing tells it
to carry its state for hours or to let go of an action that ended. Here each training sequence is
`sequence_clips` clips of the shuffled training set (so of different classes, mostly) played one
after the other, and every frame is scored. The sequence runs through the model `chunk` frames at a
time: each chunk's loss is backpropagated at once, and the state goes on to the next chunk detached,
so memory is that of one chunk while the state has seen the whole sequence. One optimizer step per
sequence batch, so epochs, schedules and resume count steps as for clips.

A frame's target is the label of the clip it belongs to, from the new clip's first frame on: the
model is asked to follow a change as soon as it can. `grace` G leaves the first G frames after a
change of label out of the loss, for a model that should not be pushed to guess before the motion
shows. Differences (`--input diff|rgb+diff`) are taken across the joins, as a stream would give them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from vidclf.device import autocast
from vidclf.models import can_step
from vidclf.preprocess import Preprocess, augment, channels_first, normalise

IGNORED = -100  # cross_entropy's ignore_index: frames the loss leaves out


@dataclass
class Sequences:
    """A batch of training streams."""

    x: torch.Tensor  # float model input (S, L, C, H, W): S sequences of L frames
    targets: torch.Tensor  # (S, L) the class of every frame, IGNORED where the loss leaves it out


def check_online(*, arch: str, model: torch.nn.Module, mix: str, compile: bool, world: int) -> None:
    """Refuse, before the first step, what --online cannot train."""
    if not can_step(model):
        raise ValueError(f"--online needs a recurrent architecture that reads forwards (cnn-lstm without "
                         f"--bidirectional, convgru, convlstm, convrnn), got {arch}")
    if mix != "none":
        raise ValueError("--mix blends whole clips: it does not apply to --online's per-frame labels")
    if compile:
        raise ValueError("--online does not --compile yet (the step runs chunk by chunk)")
    if world > 1:
        raise ValueError("--online trains in one process for now, not under torchrun")


def join_clips(clips: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor, pre: Preprocess, *,
               per_sequence: int, grace: int = 0, generator: torch.Generator | None = None,
               hflip: bool = False) -> Sequences:
    """uint8 clips (B, T, H, W, 3) as batched, their lengths and labels (B,) → B // per_sequence sequences.

    Each clip is augmented on its own (its own crop and colours, as another video would have), and
    frames past a clip's end (a video shorter than T) repeat its last frame, so that no black frame
    interrupts a stream. A batch with fewer than `per_sequence` clips makes one shorter sequence.
    """
    n = min(per_sequence, len(clips))
    S = len(clips) // n
    clips, lengths, labels = clips[: S * n], lengths[: S * n], labels[: S * n]
    x = channels_first(clips).float().div_(255)  # (S·n, T, 3, H, W)
    if generator is not None:
        x = augment(x, generator=generator, hflip=hflip)
    T = x.shape[1]
    held = torch.minimum(torch.arange(T, device=x.device)[None], (lengths - 1).clamp(min=0)[:, None])  # (S·n, T)
    x = x[torch.arange(S * n, device=x.device)[:, None], held]  # frames past the end: the last one again
    x = x.reshape(S, n * T, *x.shape[2:])  # (S·n, T, 3, H, W) → (S, n·T, 3, H, W): clips end to end
    targets = labels[:, None].expand(-1, T).reshape(S, n * T)
    x = normalise(x, torch.full((S,), n * T, device=x.device), pre)
    return Sequences(x, _grace(targets, grace))


def _grace(targets: torch.Tensor, grace: int) -> torch.Tensor:
    """`targets` (S, L) with the first `grace` frames after each change of label set to IGNORED."""
    changed = torch.zeros_like(targets, dtype=torch.bool)
    changed[:, 1:] = targets[:, 1:] != targets[:, :-1]
    ignored = torch.zeros_like(changed)
    for lag in range(grace):  # a frame within `grace` frames of a change, it included
        ignored[:, lag:] |= changed[:, : changed.shape[1] - lag]
    return targets.masked_fill(ignored, IGNORED)


def backward_sequences(model: torch.nn.Module, seqs: Sequences, *, chunk: int, backward: Callable[[torch.Tensor], None],
                       device: torch.device, dtype: torch.dtype | None = None, weight: torch.Tensor | None = None,
                       label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Truncated backpropagation over `seqs`, `chunk` frames at a time from the zero state; `backward`
    takes each chunk's share of the loss (the caller's scaler and optimizer do the rest). Returns the
    mean loss per scored frame and the fraction of scored frames right, both detached on the device."""
    x, targets = seqs.x, seqs.targets
    scored = (targets != IGNORED).sum().clamp(min=1)
    state = model.initial_state(x[:, 0])
    total, right = x.new_zeros(()), x.new_zeros(())
    for start in range(0, x.shape[1], chunk):
        wanted = targets[:, start : start + chunk]  # (S, K)
        with autocast(device, dtype):
            logits, state = model.forward_steps(x[:, start : start + chunk], state)  # (S, K, classes)
        loss = F.cross_entropy(logits.float().flatten(0, 1), wanted.flatten(), weight=weight, ignore_index=IGNORED,
                               label_smoothing=label_smoothing, reduction="sum") / scored
        backward(loss)
        state = tuple(s.detach() for s in state)  # carried on, but the gradient stops here
        total += loss.detach()
        right += (logits.detach().argmax(-1) == wanted).sum()
    return total, right / scored
