"""Commands about architectures (list them, summarise one) and the flags that set their options."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vidclf.cli.common import ReportFormat, ReportOption, Verbose, app, errors

# Architecture options: None means "the architecture's default" and is not passed on.
Backbone = Annotated[Optional[str], typer.Option(help="cnn-lstm: small, resnet18 or mobilenet_v3_small.", rich_help_panel="Model")]
Pretrained = Annotated[Optional[str], typer.Option(help="Start from torchvision's weights: 'kinetics400' for the video nets (r3d_18 …), "
                                                        "'imagenet' for cnn-lstm's backbone, or a local state_dict FILE of them.", rich_help_panel="Model")]
FreezeBackbone = Annotated[bool, typer.Option(help="Train only the head (cnn-lstm: the recurrent part and the head); frozen parts keep "
                                                   "their BatchNorm statistics too.", rich_help_panel="Model")]
Rnn = Annotated[Optional[str], typer.Option(help="cnn-lstm: lstm, gru or rnn.", rich_help_panel="Model")]
HiddenSize = Annotated[Optional[int], typer.Option(help="cnn-lstm: recurrent hidden size.", rich_help_panel="Model")]
Layers = Annotated[Optional[int], typer.Option(help="cnn-lstm: stacked recurrent layers.", rich_help_panel="Model")]
Bidirectional = Annotated[bool, typer.Option(help="cnn-lstm: read the clip both ways.", rich_help_panel="Model")]
Dropout = Annotated[Optional[float], typer.Option(help="Dropout (cnn-lstm: between recurrent layers).", rich_help_panel="Model")]
HiddenChannels = Annotated[Optional[str], typer.Option(help="conv*: hidden channels per layer, e.g. 32,32.", rich_help_panel="Model")]
KernelSizes = Annotated[Optional[str], typer.Option(help="conv*: kernel size per layer, e.g. 3,3.", rich_help_panel="Model")]

# The train/summary flag that sets each architecture option (`vidclf models` shows them).
MODEL_FLAGS = {"backbone": "--backbone", "pretrained": "--pretrained", "freeze_backbone": "--freeze-backbone",
               "rnn": "--rnn", "hidden_size": "--hidden-size", "num_layers": "--layers",
               "bidirectional": "--bidirectional", "dropout": "--dropout", "hidden_channels": "--hidden-channels",
               "kernel_sizes": "--kernel-sizes", "in_channels": "--input", "frames": "--frames"}


def _ints(text: Optional[str], name: str) -> Optional[tuple[int, ...]]:
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers like 32,32, got {text!r}", param_hint=name)


def model_options(backbone, pretrained, freeze_backbone, rnn, hidden_size, layers, bidirectional, dropout,
                  hidden_channels, kernel_sizes) -> dict:
    """The architecture options the user set, by their config names."""
    options = {
        "backbone": backbone,
        "pretrained": pretrained,
        "freeze_backbone": True if freeze_backbone else None,
        "rnn": rnn,
        "hidden_size": hidden_size,
        "num_layers": layers,
        "bidirectional": True if bidirectional else None,
        "dropout": dropout,
        "hidden_channels": _ints(hidden_channels, "--hidden-channels"),
        "kernel_sizes": _ints(kernel_sizes, "--kernel-sizes"),
    }
    return {k: v for k, v in options.items() if v is not None}


@app.command("models")
def list_models(
    format: ReportOption = ReportFormat.table,
    verbose: Verbose = False,
) -> None:
    """List the architectures with their options and defaults."""
    with errors(verbose):
        import json

        from rich.table import Table

        from vidclf import models
        from vidclf.output import stdout

        listing = {name: [{"option": o[0], "flag": MODEL_FLAGS.get(o[0]), "type": o[1], "default": o[2],
                           "help": o[3]} for o in models.model_options(name)] for name in models.MODELS}
        if format is ReportFormat.json:
            print(json.dumps(listing, indent=2, default=str))
            return
        for name, options in listing.items():
            table = Table(title=name, title_justify="left")
            for col in ("option", "flag", "type", "default", "help"):
                table.add_column(col)
            for o in options:
                table.add_row(o["option"], o["flag"] or "(Python API only)", str(o["type"]), repr(o["default"]),
                              o["help"])
            stdout.print(table)


@app.command()
def summary(
    arch: Annotated[str, typer.Option(help="Architecture (see `vidclf models`).")] = "cnn-lstm",
    frames: Annotated[int, typer.Option(help="Frames per clip (T).")] = 16,
    size: Annotated[int, typer.Option(help="Frame height and width.")] = 64,
    input: Annotated[str, typer.Option(help="rgb, diff or rgb+diff (6 input channels).")] = "rgb+diff",
    classes: Annotated[int, typer.Option(help="Number of classes of the head.")] = 6,
    backbone: Backbone = None, pretrained: Pretrained = None, freeze_backbone: FreezeBackbone = False,
    rnn: Rnn = None, hidden_size: HiddenSize = None, layers: Layers = None, bidirectional: Bidirectional = False,
    dropout: Dropout = None, hidden_channels: HiddenChannels = None, kernel_sizes: KernelSizes = None,
    model: Annotated[Optional[Path], typer.Option(help="A checkpoint: summarise its model at its frames, size and "
                                                       "input (the options above are then ignored), and show the "
                                                       "decoder that read its training data.")] = None,
    verbose: Verbose = False,
) -> None:
    """Each block's output shape and parameters for one clip, totals, and forward GFLOPs per clip."""
    with errors(verbose):
        if model is not None:
            _summarise_checkpoint(model)
            return
        from vidclf.models import build_model, input_options
        from vidclf.output import stdout
        from vidclf.preprocess import in_channels
        from vidclf.summary import summarize, summary_table

        options = model_options(backbone, pretrained, freeze_backbone, rnn, hidden_size, layers, bidirectional,
                                dropout, hidden_channels, kernel_sizes)
        channels = in_channels(input)
        net = build_model(arch, classes, **input_options(arch, in_channels=channels, num_frames=frames), **options)
        stdout.print(summary_table(summarize(net, (frames, channels, size, size))))


def _summarise_checkpoint(path: Path) -> None:
    import torch

    from vidclf import start
    from vidclf.checkpoint import load_classifier
    from vidclf.data.provenance import describe
    from vidclf.output import stdout
    from vidclf.preprocess import in_channels
    from vidclf.summary import summarize, summary_table

    clf = load_classifier(path, device=torch.device("cpu"))
    pre = clf.preprocess
    stdout.print(summary_table(summarize(clf.model, (pre.num_frames, in_channels(pre.input), pre.size, pre.size))))
    decoder = (f"training frames decoded by {describe(clf.decoder)}" if clf.decoder else
               "the decoder of its training frames is not recorded (an earlier vidclf wrote it)")
    kind = "labels (multi-label)" if clf.multi_label else "classes"
    stdout.print(f"{path}: {len(clf.classes)} {kind}; {start.describe(clf.start)}; {decoder}", highlight=False)
