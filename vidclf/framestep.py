"""One frame of a stream through a recurrent model, the state passed in and out: what `stream`,
`predict --timeline` and `export --step` all run, so that they agree with each other exactly.

As in MoViNet-Stream, the state is a plain tuple of tensors, never kept inside the module: the
caller carries it from frame to frame, resets it by starting again from `initial_state`, and an
exported step takes it as inputs and gives it back as outputs. Besides the model's own state it
holds the previous frame, since a frame-difference input (`--input diff|rgb+diff`) needs it, and
whether there was one: a stream's first frame has a zero difference, as an offline clip's first frame has.
Every part of the initial state is zero, so a device starts (or resets) a stream with zeros.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from vidclf.device import autocast
from vidclf.preprocess import Preprocess, to_model_input


class FrameStep(nn.Module):
    """uint8 RGB frames (B, 3, H, W) and the state → (logits (B, classes), *the next state)."""

    def __init__(self, model: nn.Module, pre: Preprocess):
        super().__init__()
        self.model, self.pre = model, pre

    def initial_state(self, batch: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
        """Zeros: the previous frame (B, 3, H, W) uint8, whether there was one (B, 1), the model's state."""
        size = self.pre.size
        frame = torch.zeros(batch, 3, size, size, dtype=torch.uint8, device=device)
        x = to_model_input(frame[:, None], torch.ones(batch, dtype=torch.long, device=device), self.pre)[:, 0]
        return (frame, x.new_zeros(batch, 1), *self.model.initial_state(x))

    def forward(self, frame: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        previous, seen, *model_state = state
        previous = torch.where(seen.view(-1, 1, 1, 1) > 0, previous, frame)  # the first frame: no difference
        pair = torch.stack([previous, frame], dim=1)  # (B, 2, 3, H, W): the input exactly as an offline clip's
        lengths = torch.full((frame.shape[0],), 2, dtype=torch.long, device=frame.device)
        x = to_model_input(pair, lengths, self.pre)[:, 1:]  # (B, 1, C, H, W): the newer frame
        logits, model_state = self.model.forward_steps(x, tuple(model_state))
        return (logits[:, 0], frame, torch.ones_like(seen), *model_state)


class Stepper:
    """A stream read by a recurrent checkpoint: every frame one step, the state carried until `reset`.

    Has the ring buffer's face (vidclf/stream.py): `add` each frame, then `logits` of the newest;
    a record is possible from the first frame on.
    """

    first_record = 0  # frames before the first record

    def __init__(self, model: nn.Module, pre: Preprocess, device: torch.device, dtype: torch.dtype | None):
        self.step, self.device, self.dtype = FrameStep(model, pre), device, dtype
        self.reset()

    def reset(self) -> None:
        """Forget everything seen: the next frame starts from the zero state, as a new stream does."""
        self.state = self.step.initial_state(1, self.device)
        self.last: torch.Tensor | None = None

    @torch.inference_mode()
    def add(self, index: int, frame: np.ndarray) -> None:
        """One step on frame `index` (uint8 (H, W, 3) RGB); the indices only matter to the ring buffer."""
        frame_t = torch.from_numpy(frame).permute(2, 0, 1)[None].to(self.device)  # (H, W, 3) → (1, 3, H, W)
        with autocast(self.device, self.dtype):
            logits, *self.state = self.step(frame_t, *self.state)
        self.last = logits[0].float()

    def logits(self, newest: int) -> torch.Tensor:
        """Logits (classes,) after the newest frame added."""
        return self.last
