"""Starting from torchvision's pretrained weights: fetch or read a state_dict, load it with errors that say
what is wrong, and widen a pretrained 3-channel first convolution to vidclf's other inputs.

One copy, shared by the CNN+LSTM's ImageNet backbones and the Kinetics-400 video networks.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

# --pretrained value → (what the weights were trained on, for messages; torchvision's weights entry)
SOURCES = {"imagenet": ("ImageNet", "DEFAULT"), "kinetics400": ("Kinetics-400", "KINETICS400_V1")}


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def torchvision_weights(arch: str, source: str):
    """torchvision's weights entry (url, transforms, meta) for `arch` trained on `source` (a key of SOURCES)."""
    from torchvision.models import get_model_weights

    return getattr(get_model_weights(arch), SOURCES[source][1])


def pretrained_state(arch: str, pretrained: str, *, source: str) -> dict:
    """The state_dict `pretrained` names: `source` itself means torchvision's weights for `arch` (downloaded,
    or from torch.hub's cache); anything else is a local file, torchvision's state_dict saved with torch.save."""
    if pretrained != source:
        try:
            return torch.load(pretrained, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(f"{pretrained}: could not load pretrained weights ({_one_line(err)})") from None
    import socket

    from torch import hub

    weights = torchvision_weights(arch, source)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)  # a firewall that drops packets must give an error, not a hang
    try:
        # Through torch.hub's attribute at call time (torchvision binds its own copy at import),
        # so that the download is the one place tests replace. Uses the hub cache when present.
        return hub.load_state_dict_from_url(weights.url, progress=False, check_hash=True)
    except Exception as err:
        raise ValueError(
            f"could not fetch torchvision's {SOURCES[source][0]} weights for {arch} ({type(err).__name__}: "
            f"{_one_line(err)}); without network access, download {weights.url} elsewhere and pass --pretrained FILE"
        ) from None
    finally:
        socket.setdefaulttimeout(previous)


def load_pretrained(net: nn.Module, arch: str, pretrained: str, *, source: str) -> None:
    """Load `pretrained` (see `pretrained_state`) into `net`, torchvision's `arch` as its builder made it.

    A file of another architecture raises one line that says which keys or shapes do not fit.
    """
    state = pretrained_state(arch, pretrained, source=source)
    if not isinstance(state, Mapping):
        raise ValueError(f"{pretrained}: not a torchvision {arch} state_dict (it holds a {type(state).__name__})")
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [f"{k} {tuple(getattr(state[k], 'shape', ()))} for {tuple(v.shape)}" for k, v in expected.items()
                if k in state and tuple(getattr(state[k], "shape", ())) != tuple(v.shape)]
    if missing or unexpected or reshaped:
        problems = [f"{len(found)} {what}, e.g. {found[0]}" for what, found in
                    (("keys missing", missing), ("unexpected", unexpected), ("of another shape", reshaped))
                    if found]
        hint = "; a vidclf checkpoint starts a run with --init" if {"state_dict", "model"} <= set(state) else ""
        raise ValueError(f"{pretrained}: not a torchvision {arch} state_dict ({'; '.join(problems)}){hint}")
    net.load_state_dict(state)


def widen_first_conv(conv: nn.Conv2d | nn.Conv3d, in_channels: int) -> nn.Conv2d | nn.Conv3d:
    """`conv` (2D or 3D) taking `in_channels` instead of its own (RGB's 3): a new convolution whose input
    channel c holds `conv`'s filter for channel c mod 3, scaled by 3/in_channels, keeping what pretrained
    RGB filters know. Input whose extra channels repeat the RGB channels gives `conv`'s own output.
    Returns `conv` itself when it already takes `in_channels`."""
    if conv.in_channels == in_channels:
        return conv
    if conv.groups != 1:
        raise ValueError(f"cannot widen a grouped convolution ({conv})")
    wide = type(conv)(in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                      dilation=conv.dilation, bias=conv.bias is not None, padding_mode=conv.padding_mode,
                      device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        repeats = -(-in_channels // conv.in_channels)
        spread = conv.weight.repeat(1, repeats, *(1,) * (conv.weight.dim() - 2))[:, :in_channels]  # (out, in, k…)
        wide.weight.copy_(spread * conv.in_channels / in_channels)
        if conv.bias is not None:
            wide.bias.copy_(conv.bias)
    return wide
