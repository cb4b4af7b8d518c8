"""torchvision's Kinetics-400 video classifiers as vidclf architectures, wrapped, not copied: the 3D and
(2+1)D ResNets r3d_18, mc3_18 and r2plus1d_18, the separable Inception s3d, and the video transformers
mvit_v2_s and swin3d_t. Networks that already know what video looks like, for sets of a few hundred clips.

The adapter is thin. Clips come batch-first (B, T, C, H, W) and go in as torchvision's (B, C, T, H, W);
torchvision's classifier becomes `nn.Identity`, so the network gives its pooled vector (B, D), and vidclf's
`dropout` and `head` (a Linear for the dataset's classes) follow. `pretrained` loads torchvision's
Kinetics-400 weights or a state_dict file of the architecture; the first convolution is then widened to
`in_channels` (`widen_first_conv`), so rgb+diff input keeps what the RGB filters know.

Clip lengths. A recurrent model reads a clip's real frames and stops; a 3D network convolves the whole
(T, H, W) block at once, so padding frames would change its output, and MViT takes only the 16 frames its
token grid was built for. So each clip's real frames (the first `lengths[b]` of T, or all T) are resampled
by nearest index to `config.frames` before the network: input frame k is real frame ⌊(2k+1)·L / 2F⌋, the
one at the centre of its slot (integer arithmetic, so exact). For L = F that is the clip itself, so a clip
of the run's T = frames goes in untouched; padding never changes the logits; `model(x)` works for any T; and
lengths select frames by gather, never by shape, so one compiled graph serves every batch. The price: a clip
shorter than `frames` (in vidclf, only a video with fewer frames than the run's T) is stretched, each frame
repeated, so its motion looks slower than in a full clip; and for T ≠ frames every clip is stretched or
thinned alike. Zero padding instead would make a clip's logits depend on the batch it came in.

Shapes. mvit_v2_s takes only 16 frames of 224² (`FIXED`; it says so). s3d's final 2×7×7 average pool
(stride 1, its windows then averaged) becomes a global mean: the same map at the weights' 16 frames of 224²,
and one that also runs on smaller clips (from 6 frames of 17²), where torchvision's fails below 224² or 14
frames; on larger clips the two weigh the border differently. The others take any shape.

A stream (vidclf/stream.py) finds no per-frame part to reuse: `frame_features` is the identity and each hop
runs the whole network on the window, which gives the offline clip's logits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn

from vidclf.models import register
from vidclf.models.weights import load_pretrained, torchvision_weights, widen_first_conv

# Where torchvision keeps each network's first convolution and its classifier (replaced by vidclf's head).
PARTS = {
    "r3d_18": ("stem.0", "fc"),
    "mc3_18": ("stem.0", "fc"),
    "r2plus1d_18": ("stem.0", "fc"),
    "s3d": ("features.0.0.0", "classifier"),  # classifier: Dropout, 1×1×1 Conv3d, then a mean: a Linear on the mean
    "mvit_v2_s": ("conv_proj", "head"),
    "swin3d_t": ("patch_embed.proj", "head"),
}
# Networks that take one input shape only. mvit_v2_s takes its token grid (8×56×56) from positional terms that
# its builder makes for 16 frames of 224² and lets no one change. (swin3d_t pads to its windows, and the
# ResNets and s3d pool globally: any shape.)
FIXED = ("mvit_v2_s",)
# s3d's last max pool halves time without padding: fewer than 5 frames leave it nothing. At exactly 5, torch
# 2.14's oneDNN CPU backward of its first temporal conv (7×1×1, stride 2, padding 3; batch ≥ 2) corrupts the
# heap and kills the process (measured: of 1-32 frames only 5 does, and not without oneDNN). So 6.
MIN_FRAMES = {"s3d": 6}
SOURCE = "kinetics400"


@dataclass
class VideoNetConfig:
    in_channels: int = field(default=3, metadata={"help": "input channels: 3 for rgb/diff, 6 for rgb+diff"})
    pretrained: str | None = field(default=None, metadata={
        "help": "'kinetics400' (torchvision's weights) or a torchvision state_dict file of this architecture"})
    freeze_backbone: bool = field(default=False, metadata={
        "help": "train only the head: the network keeps its weights and BatchNorm statistics"})
    dropout: float = field(default=0.0, metadata={"help": "dropout before the head"})
    frames: int = field(default=16, metadata={
        "help": "each clip's real frames are resampled to this many before the network (mvit_v2_s: 16)"})

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError(f"frames should be at least 1, got {self.frames}")


@dataclass(frozen=True)
class WeightsPreprocess:
    """How frames must look for an architecture's pretrained weights, read from torchvision's weights entry."""

    mean: tuple[float, float, float]  # per RGB channel on the 0–1 scale, as the weights' transforms normalise
    std: tuple[float, float, float]
    size: int  # the transforms' centre crop; vidclf squashes whole frames to size×size instead of resize+crop
    frames: int  # the clip length the weights' accuracy was measured with, or the only one the network takes
    fixed: bool  # True: the network takes only size×size frames, and `frames` internally (config.frames)


def weights_preprocess(name: str, pretrained: str | None) -> WeightsPreprocess | None:
    """The preprocessing `name`'s weights expect: for any `pretrained` (a file holds torchvision's weights
    too), and for a network of one fixed shape even without weights; None where nothing is expected."""
    if name not in PARTS or not (pretrained or name in FIXED):
        return None
    weights = torchvision_weights(name, SOURCE)
    transforms, meta = weights.transforms(), weights.meta
    crop = transforms.crop_size  # [h, w], square for all of them
    if name in FIXED:
        frames = meta["min_temporal_size"]
    else:  # the meta states it in prose: "… `frame_rate=15`, `clips_per_video=5`, and `clip_len=16`."
        found = re.search(r"clip_len=(\d+)", meta.get("_docs", ""))
        frames = int(found.group(1)) if found else meta.get("min_temporal_size", VideoNetConfig.frames)
    return WeightsPreprocess(mean=tuple(transforms.mean), std=tuple(transforms.std), size=crop[0], frames=frames,
                             fixed=name in FIXED)


def resample(x: torch.Tensor, lengths: torch.Tensor | None, frames: int) -> torch.Tensor:
    """(B, T, …), lengths (B,) or None (all T) → (B, frames, …): each clip's real frames by nearest index."""
    B, T = x.shape[:2]
    if lengths is None:
        if T == frames:
            return x
        index = torch.tensor([(2 * k + 1) * T // (2 * frames) for k in range(frames)], device=x.device)
        return x[:, index]
    L = lengths.to(x.device).clamp(1, T)
    index = (2 * torch.arange(frames, device=x.device) + 1)[None, :] * L[:, None] // (2 * frames)  # (B, frames)
    return x[torch.arange(B, device=x.device)[:, None], index]


def _width(classifier: nn.Module) -> int:
    """The size of the vector torchvision's classifier reads."""
    last = [m for m in classifier.modules() if isinstance(m, (nn.Linear, nn.Conv3d))][-1]
    return last.in_features if isinstance(last, nn.Linear) else last.in_channels


class VideoNet(nn.Module):
    """torchvision's `arch` (`self.body`, its classifier an Identity) with vidclf's clip lengths, dropout and head."""

    def __init__(self, arch: str, num_classes: int, config: VideoNetConfig):
        super().__init__()
        from torchvision.models import video

        self.arch, self.config = arch, config
        self.size: tuple[int, int] | None = None  # the only frame size a fixed network takes
        if arch in FIXED:
            meta = torchvision_weights(arch, SOURCE).meta
            self.size = tuple(meta["min_size"])
            if config.frames != meta["min_temporal_size"]:
                raise ValueError(f"{arch} takes exactly {meta['min_temporal_size']} frames (its token grid is built "
                                 f"for them), got frames={config.frames}")
        if config.frames < MIN_FRAMES.get(arch, 1):
            raise ValueError(f"{arch} needs at least {MIN_FRAMES[arch]} frames, got frames={config.frames}")
        net = getattr(video, arch)(weights=None)
        if config.pretrained:
            load_pretrained(net, arch, config.pretrained, source=SOURCE)
        stem, classifier = PARTS[arch]
        net.set_submodule(stem, widen_first_conv(net.get_submodule(stem), config.in_channels))
        width = _width(net.get_submodule(classifier))
        net.set_submodule(classifier, nn.Identity())
        if arch == "s3d":  # see the module's docstring: a global mean, torchvision's own pool at 16×224²
            net.avgpool = nn.AdaptiveAvgPool3d(1)
        self.body = net
        if config.freeze_backbone:
            self.body.requires_grad_(False)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(width, num_classes)

    def train(self, mode: bool = True) -> "VideoNet":
        """A frozen network stays in eval mode: its BatchNorm statistics (and stochastic depth) are frozen too."""
        super().train(mode)
        if self.config.freeze_backbone:
            self.body.eval()
        return self

    def frame_features(self, x: torch.Tensor) -> torch.Tensor:
        """The per-frame part, for a stream: none, the network's first layer already mixes neighbouring frames."""
        return x

    def sequence_features(self, seq: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, C, H, W), lengths (B,) or None (all T) → (B, D): the real frames resampled, through the network."""
        B, T, C, H, W = seq.shape  # batch, time, channels, height, width
        if self.size is not None and (H, W) != self.size:
            raise ValueError(f"{self.arch} takes frames of exactly {self.size[0]}×{self.size[1]} "
                             f"(its token grid is built for them), got {H}×{W}")
        clip = resample(seq, lengths, self.config.frames)  # (B, frames, C, H, W)
        return self.body(clip.transpose(1, 2))  # torchvision's (B, C, frames, H, W) → (B, D)

    def forward_features(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, C, H, W), lengths (B,) or None (all T) → (B, D): the network's pooled vector."""
        return self.sequence_features(self.frame_features(x), lengths)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(features))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(x, lengths))


def _builder(arch: str):
    def build(num_classes: int, config: VideoNetConfig) -> VideoNet:
        return VideoNet(arch, num_classes, config)

    return build


for _arch in PARTS:
    register(_arch, VideoNetConfig)(_builder(_arch))
