"""CNN+LSTM: a 2D CNN on every frame (time folded into the batch), then a recurrent layer over time.

Each frame's feature map is pooled to a small grid, not to one vector: motion is a change of
*where*, and global average pooling throws where away (a model that pools globally cannot tell
left from right).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from vidclf.models import lengths_or_full, register
from vidclf.models.weights import load_pretrained, widen_first_conv

RNNS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
BACKBONES = ("small", "resnet18", "mobilenet_v3_small")


@dataclass
class CnnLstmConfig:
    in_channels: int = field(default=3, metadata={"help": "input channels: 3 for rgb/diff, 6 for rgb+diff"})
    backbone: str = field(default="small", metadata={"help": "small, resnet18 or mobilenet_v3_small"})
    pretrained: str | None = field(default=None, metadata={"help": "'imagenet' or a state_dict file for the backbone"})
    freeze_backbone: bool = field(default=False, metadata={"help": "keep the backbone's weights fixed"})
    grid: int = field(default=4, metadata={"help": "per-frame features pooled to grid×grid cells (keeps position)"})
    feature_size: int = field(default=256, metadata={"help": "per-frame vector fed to the recurrent layer"})
    motion_features: bool = field(default=True, metadata={
        "help": "also feed the recurrent layer each frame's feature change from the previous frame"})
    rnn: str = field(default="lstm", metadata={"help": "lstm, gru or rnn"})
    hidden_size: int = field(default=128, metadata={"help": "recurrent hidden size"})
    num_layers: int = field(default=1, metadata={"help": "stacked recurrent layers"})
    bidirectional: bool = field(default=False, metadata={"help": "read the clip forwards and backwards"})
    dropout: float = field(default=0.0, metadata={"help": "dropout between recurrent layers and before the head"})

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone should be one of {', '.join(BACKBONES)}, got {self.backbone!r}")
        if self.rnn not in RNNS:
            raise ValueError(f"rnn should be one of {', '.join(RNNS)}, got {self.rnn!r}")


def _conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def small_cnn(in_channels: int) -> tuple[nn.Module, int]:
    """Four 3×3 conv blocks, three of them stride 2: cheap enough for CPUs, 8× smaller maps."""
    net = nn.Sequential(_conv_bn(in_channels, 32, 2), _conv_bn(32, 64, 2), _conv_bn(64, 64, 1), _conv_bn(64, 128, 2))
    return net, 128


def torchvision_cnn(name: str, in_channels: int, pretrained: str | None) -> tuple[nn.Module, int]:
    """A torchvision classifier without its pooling and head; the first conv adapted to `in_channels`."""
    from torchvision import models

    net = getattr(models, name)(weights=None)
    if pretrained:
        load_pretrained(net, name, pretrained, source="imagenet")
    if name == "resnet18":
        net.conv1 = widen_first_conv(net.conv1, in_channels)
        return nn.Sequential(*list(net.children())[:-2]), 512
    net.features[0][0] = widen_first_conv(net.features[0][0], in_channels)
    return net.features, 576


class CnnLstm(nn.Module):
    def __init__(self, num_classes: int, config: CnnLstmConfig):
        super().__init__()
        self.config = c = config
        if c.backbone == "small":
            if c.pretrained:
                raise ValueError("the small backbone has no pretrained weights; use resnet18 or mobilenet_v3_small")
            self.backbone, width = small_cnn(c.in_channels)
        else:
            self.backbone, width = torchvision_cnn(c.backbone, c.in_channels, c.pretrained)
        # channels_last weights and inputs: less inference time than the default layout on the 2-core
        # CPU (0.52-0.80x in two measurements, see DESIGN.md), training time about equal.
        self.backbone.to(memory_format=torch.channels_last)
        if c.freeze_backbone:
            self.backbone.requires_grad_(False)
        self.pool = nn.AdaptiveAvgPool2d(c.grid)
        self.project = nn.Sequential(nn.Flatten(), nn.Linear(width * c.grid * c.grid, c.feature_size),
                                     nn.ReLU(inplace=True))
        self.rnn = RNNS[c.rnn](c.feature_size * (2 if c.motion_features else 1), c.hidden_size, num_layers=c.num_layers, batch_first=True,
                               bidirectional=c.bidirectional, dropout=c.dropout if c.num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.hidden_size * (2 if c.bidirectional else 1), num_classes)

    def train(self, mode: bool = True) -> "CnnLstm":
        """A frozen backbone stays in eval mode: its BatchNorm statistics are frozen too."""
        super().train(mode)
        if self.config.freeze_backbone:
            self.backbone.eval()
        return self

    def frame_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) → (B, T, feature_size): every frame through the CNN in one batch.

        Each frame's result depends on that frame's input alone, so a stream computes it once per frame.
        """
        B, T, C, H, W = x.shape  # batch, time, channels, height, width
        frames = x.reshape(B * T, C, H, W).contiguous(memory_format=torch.channels_last)
        maps = self.backbone(frames)  # (B*T, width, h, w)
        return self.project(self.pool(maps)).view(B, T, -1)  # (B*T, width·grid²) → (B, T, feature_size)

    def sequence_features(self, seq: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """`frame_features` (B, T, feature_size), lengths (B,) or None (all T) → (B, hidden).

        Everything that depends on where the clip starts: the feature changes and the recurrent layer.
        """
        if self.config.motion_features:
            # [p_t, p_t - p_{t-1}] (zero change at t = 0): direction becomes linear in the input, so the
            # recurrent layer only has to accumulate it; learns several times faster than p_t alone.
            change = torch.cat([torch.zeros_like(seq[:, :1]), seq[:, 1:] - seq[:, :-1]], dim=1)
            seq = torch.cat([seq, change], dim=2)  # (B, T, 2·feature_size)
        if self.config.bidirectional:
            # Packed only for clips of their own lengths: the backward direction must start at each
            # clip's last real frame. Full-length clips need no packing (which torch.export cannot trace).
            packed = seq if lengths is None else nn.utils.rnn.pack_padded_sequence(
                seq, lengths.cpu(), batch_first=True, enforce_sorted=False)
            _, state = self.rnn(packed)
            h = state[0] if isinstance(state, tuple) else state  # (layers·2, B, hidden)
            return torch.cat([h[-2], h[-1]], dim=1)  # forward and backward directions of the last layer
        out, _ = self.rnn(seq)  # (B, T, hidden); causal, so step L-1 never saw the padding after it
        lengths = lengths_or_full(seq, lengths)
        last = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, out.shape[2])
        return out.gather(1, last).squeeze(1)

    @property
    def stepwise(self) -> bool:
        """Whether the model can read a stream frame by frame (a backward direction needs the whole clip)."""
        return not self.config.bidirectional

    def initial_state(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The state before a stream's first frame, for model input frames like x (B, C, H, W); all zeros.

        Batch-first tensors: the recurrent layer's h (and the LSTM's c) as (B, layers, hidden), then the
        last frame's features (B, feature_size) and whether there was a last frame (B, 1): the first
        frame's feature change is zero, as a clip's first frame's is.
        """
        c, B = self.config, x.shape[0]
        self._check_stepwise()
        h = x.new_zeros(B, c.num_layers, c.hidden_size)
        cell = (h, torch.zeros_like(h)) if c.rnn == "lstm" else (h,)
        return (*cell, x.new_zeros(B, c.feature_size), x.new_zeros(B, 1))

    def forward_steps(self, x: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """(B, T, C, H, W) from `state` → logits after every frame (B, T, classes), and the state after the last.

        From `initial_state`, step T's logits equal `forward` on the first T frames; carried on, the
        next call continues the same sequence, so a stream of any length costs one frame per frame.
        """
        self._check_stepwise()
        *cell, last, seen = state
        seq = self.frame_features(x)  # (B, T, feature_size)
        if self.config.motion_features:
            before = torch.cat([last[:, None], seq[:, :-1]], dim=1)  # (B, T, feature_size): each frame's previous
            first = torch.cat([seen[:, None], seen.new_ones(seq.shape[0], seq.shape[1] - 1, 1)], dim=1)  # (B, T, 1)
            seq_in = torch.cat([seq, (seq - before) * first], dim=2)  # as sequence_features: no change before frame 0
        else:
            seq_in = seq
        hx = tuple(s.transpose(0, 1).contiguous() for s in cell)  # (B, layers, hidden) → (layers, B, hidden)
        out, hx = self.rnn(seq_in, hx if len(hx) == 2 else hx[0])  # (B, T, hidden)
        hx = hx if isinstance(hx, tuple) else (hx,)
        cell = tuple(s.transpose(0, 1) for s in hx)
        return self.forward_head(out), (*cell, seq[:, -1], torch.ones_like(seen))

    def _check_stepwise(self) -> None:
        if not self.stepwise:
            raise ValueError("a bidirectional recurrent layer reads each clip backwards from its end: "
                             "it cannot read a stream frame by frame")

    def forward_features(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, C, H, W), lengths (B,) or None (all T) → (B, hidden): the state after each clip's own last frame."""
        return self.sequence_features(self.frame_features(x), lengths)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(features))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(x, lengths))


@register("cnn-lstm", CnnLstmConfig)
def cnn_lstm(num_classes: int, config: CnnLstmConfig) -> CnnLstm:
    return CnnLstm(num_classes, config)
