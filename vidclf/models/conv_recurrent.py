"""Recurrent CNNs: ConvGRU, ConvLSTM and ConvRNN stacks, whose hidden states are C×H×W feature maps.

They share everything but the cell: a strided stem shrinks the frames (the recurrence at full
resolution costs far too much), then L layers, each reading the previous layer's hidden sequence,
then global pooling of the last layer's final state and a linear head. Inside a layer only the
hidden-to-hidden convolutions are sequential; the input convolutions of all time steps run in one call.
`frame_features` (stem and first input convolutions, per frame) and `sequence_features` (the rest) split
the work so that a stream (vidclf/stream.py) does the per-frame part once per frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from vidclf.models import lengths_or_full, register


def _mean(maps: torch.Tensor) -> torch.Tensor:
    return maps.mean(dim=(2, 3))


def _max(maps: torch.Tensor) -> torch.Tensor:
    return maps.amax(dim=(2, 3))


POOLS = {"avg": (_mean,), "max": (_max,), "avgmax": (_mean, _max)}  # (B, C, h, w) → one (B, C) vector each


@dataclass
class ConvRecurrentConfig:
    in_channels: int = field(default=3, metadata={"help": "input channels: 3 for rgb/diff, 6 for rgb+diff"})
    stem_channels: int = field(default=32, metadata={"help": "channels of the strided stem"})
    stem_layers: int = field(default=2, metadata={"help": "stride-2 convolutions before the recurrence (64² → 16²)"})
    hidden_channels: tuple[int, ...] = field(default=(32, 32), metadata={"help": "hidden channels, one per layer"})
    kernel_sizes: tuple[int, ...] = field(default=(3, 3), metadata={"help": "kernel size, one per layer (odd)"})
    dropout: float = field(default=0.0, metadata={"help": "dropout before the head"})
    freeze_backbone: bool = field(default=False, metadata={
        "help": "train only the head: the stem and recurrent layers keep their weights (for --init)"})
    pool: str = field(default="avg", metadata={"help": "the final state's map to a vector: avg, max or avgmax (both)"})

    def __post_init__(self) -> None:
        self.hidden_channels = tuple(int(c) for c in self.hidden_channels)
        self.kernel_sizes = tuple(int(k) for k in self.kernel_sizes)
        if not self.hidden_channels:
            raise ValueError("hidden_channels needs at least one layer (a recurrent net needs a recurrence)")
        if len(self.kernel_sizes) == 1 and len(self.hidden_channels) > 1:
            self.kernel_sizes = self.kernel_sizes * len(self.hidden_channels)
        if len(self.kernel_sizes) != len(self.hidden_channels):
            raise ValueError(f"kernel_sizes {self.kernel_sizes} needs one entry per layer of "
                             f"hidden_channels {self.hidden_channels}")
        if self.pool not in POOLS:
            raise ValueError(f"pool should be one of {', '.join(POOLS)}, got {self.pool!r}")
        if any(k % 2 == 0 for k in self.kernel_sizes):
            raise ValueError(f"kernel sizes must be odd so the state keeps its size, got {self.kernel_sizes}")


def _same_conv(cin: int, cout: int, k: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias)


class ConvGRUCell(nn.Module):
    """z = σ(Wz∗x + Uz∗h + bz), r = σ(Wr∗x + Ur∗h + br), h' = z⊙h + (1−z)⊙tanh(Wh∗x + Uh∗(r⊙h) + bh)."""

    gates = 3  # input convolutions: Wz, Wr, Wh (with the biases)
    state_tensors = 1  # h

    def __init__(self, in_channels: int, hidden: int, kernel: int):
        super().__init__()
        self.hidden = hidden
        self.input_conv = _same_conv(in_channels, 3 * hidden, kernel, bias=True)  # Wz | Wr | Wh
        self.hidden_zr = _same_conv(hidden, 2 * hidden, kernel, bias=False)  # Uz | Ur, fused
        self.hidden_h = _same_conv(hidden, hidden, kernel, bias=False)  # Uh

    def initial_state(self, gx: torch.Tensor) -> torch.Tensor:
        B, _, H, W = gx.shape
        return gx.new_zeros(B, self.hidden, H, W)

    def step(self, gx: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """gx: this step's input convolutions (B, 3·hidden, H, W); returns (output, state), both h'."""
        xz, xr, xh = gx.chunk(3, dim=1)
        hz, hr = self.hidden_zr(h).chunk(2, dim=1)
        z = torch.sigmoid(xz + hz)
        r = torch.sigmoid(xr + hr)
        candidate = torch.tanh(xh + self.hidden_h(r * h))
        h = z * h + (1 - z) * candidate
        return h, h


class ConvLSTMCell(nn.Module):
    """Shi et al. (2015) without peepholes: i, f, o, g from convolutions of x and h;
    c' = σ(f)⊙c + σ(i)⊙tanh(g), h' = σ(o)⊙tanh(c')."""

    gates = 4
    state_tensors = 2  # h, c

    def __init__(self, in_channels: int, hidden: int, kernel: int):
        super().__init__()
        self.hidden = hidden
        self.input_conv = _same_conv(in_channels, 4 * hidden, kernel, bias=True)  # Wi | Wf | Wo | Wg
        self.hidden_conv = _same_conv(hidden, 4 * hidden, kernel, bias=False)  # Ui | Uf | Uo | Ug
        with torch.no_grad():  # forget-gate bias 1: remember by default (Jozefowicz et al. 2015); learns faster
            self.input_conv.bias[hidden : 2 * hidden].fill_(1.0)

    def initial_state(self, gx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, _, H, W = gx.shape
        return gx.new_zeros(B, self.hidden, H, W), gx.new_zeros(B, self.hidden, H, W)

    def step(self, gx: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        h, c = state
        i, f, o, g = (gx + self.hidden_conv(h)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


class ConvRNNCell(nn.Module):
    """The vanilla recurrent CNN: h' = tanh(Wx∗x + Wh∗h + b)."""

    gates = 1
    state_tensors = 1  # h

    def __init__(self, in_channels: int, hidden: int, kernel: int):
        super().__init__()
        self.hidden = hidden
        self.input_conv = _same_conv(in_channels, hidden, kernel, bias=True)  # Wx, b
        self.hidden_conv = _same_conv(hidden, hidden, kernel, bias=False)  # Wh

    def initial_state(self, gx: torch.Tensor) -> torch.Tensor:
        B, _, H, W = gx.shape
        return gx.new_zeros(B, self.hidden, H, W)

    def step(self, gx: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.tanh(gx + self.hidden_conv(h))
        return h, h


class ConvRecurrentLayer(nn.Module):
    """One layer over a whole sequence: (B, T, C, H, W) → hidden sequence (B, T, hidden, H, W)."""

    def __init__(self, cell: nn.Module):
        super().__init__()
        self.cell = cell

    def input_convs(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) → (B, T, gates·hidden, H, W): the input convolutions of all time steps in one call."""
        B, T, C, H, W = x.shape  # batch, time, channels, height, width
        gx = self.cell.input_conv(x.reshape(B * T, C, H, W))
        return gx.view(B, T, -1, H, W)  # (B*T, gates·hidden, H, W) → (B, T, gates·hidden, H, W)

    def recur(self, gx: torch.Tensor) -> torch.Tensor:
        """`input_convs` (B, T, gates·hidden, H, W) → hidden sequence (B, T, hidden, H, W), from a zero state."""
        return self.recur_from(gx, self.cell.initial_state(gx[:, 0]))[0]

    def recur_from(self, gx: torch.Tensor, state):
        """`input_convs` (B, T, gates·hidden, H, W) and the cell's state → (hidden sequence, the state after it)."""
        outputs = []
        for gx_t in gx.unbind(1):  # unbind, not gx[:, t]: one view per step, measured 2× faster
            h, state = self.cell.step(gx_t, state)
            outputs.append(h)
        return torch.stack(outputs, dim=1), state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.recur(self.input_convs(x))


class ConvRecurrentNet(nn.Module):
    def __init__(self, num_classes: int, config: ConvRecurrentConfig, cell: type):
        super().__init__()
        self.config = c = config
        stem, channels = [], c.in_channels
        for _ in range(c.stem_layers):
            stem += [nn.Conv2d(channels, c.stem_channels, 3, 2, 1, bias=False), nn.BatchNorm2d(c.stem_channels),
                     nn.ReLU(inplace=True)]
            channels = c.stem_channels
        self.stem = nn.Sequential(*stem)
        layers = []
        for hidden, kernel in zip(c.hidden_channels, c.kernel_sizes):
            layers.append(ConvRecurrentLayer(cell(channels, hidden, kernel)))
            channels = hidden
        self.layers = nn.ModuleList(layers)
        self.dropout = nn.Dropout(c.dropout)
        self.head = nn.Linear(channels * len(POOLS[c.pool]), num_classes)
        if c.freeze_backbone:
            self.stem.requires_grad_(False)
            self.layers.requires_grad_(False)

    def train(self, mode: bool = True) -> "ConvRecurrentNet":
        """A frozen backbone stays in eval mode: the stem's BatchNorm statistics are frozen too."""
        super().train(mode)
        if self.config.freeze_backbone:
            self.stem.eval()
            self.layers.eval()
        return self

    def frame_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) → (B, T, gates·hidden, h, w): the stem and the first layer's input convolutions.

        This is the part that depends on each frame alone, so a stream computes it once per frame.
        """
        B, T, C, H, W = x.shape  # batch, time, channels, height, width
        maps = self.stem(x.reshape(B * T, C, H, W))
        seq = maps.view(B, T, *maps.shape[1:])  # (B*T, c, h, w) → (B, T, c, h, w)
        return self.layers[0].input_convs(seq)

    def sequence_features(self, gx: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """`frame_features` (B, T, gates·hidden, h, w), lengths (B,) or None (all T) → (B, hidden × vectors per pool).

        Everything that depends on where the clip starts: the recurrences (zero state at its first frame),
        the deeper layers, and the last layer's state at each clip's last frame, pooled.
        """
        B = gx.shape[0]
        lengths = lengths_or_full(gx, lengths)
        seq = self.layers[0].recur(gx)  # (B, T, hidden, h, w)
        for layer in self.layers[1:]:
            seq = layer(seq)  # causal: the state at step L-1 never saw the padding after it
        index = (lengths - 1).clamp(min=0).view(B, 1, 1, 1, 1).expand(B, 1, *seq.shape[2:])
        last = seq.gather(1, index).squeeze(1)  # (B, hidden, h, w)
        return torch.cat([pool(last) for pool in POOLS[self.config.pool]], dim=1)

    stepwise = True  # every cell reads forwards: a stream can be read frame by frame

    def initial_state(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The state before a stream's first frame, for model input frames like x (B, C, H, W): zero maps.

        One tensor per layer (h), two for the ConvLSTM (h, c), each (B, hidden, h, w) at the stem's size.
        """
        B, _, H, W = x.shape
        for _ in range(self.config.stem_layers):  # each stem conv: 3×3, stride 2, padding 1
            H, W = (H - 1) // 2 + 1, (W - 1) // 2 + 1
        state: list[torch.Tensor] = []
        for layer in self.layers:
            init = layer.cell.initial_state(x.new_zeros(B, 1, H, W))
            state += init if isinstance(init, tuple) else [init]
        return tuple(state)

    def forward_steps(self, x: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """(B, T, C, H, W) from `state` → logits after every frame (B, T, classes), and the state after the last.

        From `initial_state`, step T's logits equal `forward` on the first T frames; carried on, the
        next call continues the same sequence, so a stream of any length costs one frame per frame.
        """
        seq, rest, after = self.frame_features(x), list(state), []
        for i, layer in enumerate(self.layers):
            gx = seq if i == 0 else layer.input_convs(seq)  # (B, T, gates·hidden, h, w)
            taken, rest = rest[: layer.cell.state_tensors], rest[layer.cell.state_tensors :]
            cell_state = tuple(taken) if len(taken) > 1 else taken[0]
            seq, cell_state = layer.recur_from(gx, cell_state)  # (B, T, hidden, h, w)
            after += cell_state if isinstance(cell_state, tuple) else [cell_state]
        B, T = seq.shape[:2]
        maps = seq.flatten(0, 1)  # (B*T, hidden, h, w)
        features = torch.cat([pool(maps) for pool in POOLS[self.config.pool]], dim=1).view(B, T, -1)
        return self.forward_head(features), tuple(after)

    def forward_features(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, C, H, W), lengths (B,) or None (all T) → (B, hidden × vectors per pool): the last layer's state at each clip's last frame."""
        return self.sequence_features(self.frame_features(x), lengths)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(features))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(x, lengths))


@register("convgru", ConvRecurrentConfig)
def convgru(num_classes: int, config: ConvRecurrentConfig) -> ConvRecurrentNet:
    return ConvRecurrentNet(num_classes, config, ConvGRUCell)


@register("convlstm", ConvRecurrentConfig)
def convlstm(num_classes: int, config: ConvRecurrentConfig) -> ConvRecurrentNet:
    return ConvRecurrentNet(num_classes, config, ConvLSTMCell)


@register("convrnn", ConvRecurrentConfig)
def convrnn(num_classes: int, config: ConvRecurrentConfig) -> ConvRecurrentNet:
    return ConvRecurrentNet(num_classes, config, ConvRNNCell)
