"""`vidclf summary`: a Keras-style table of a model's blocks, their output shapes, parameters and FLOPs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from rich.table import Table
from torch import nn


@dataclass
class Summary:
    name: str
    input_shape: tuple[int, ...]  # (T, C, H, W) of one clip
    rows: list[tuple[str, str, tuple[int, ...], int]]  # block, type, output shape, parameters
    trainable: int
    frozen: int
    gflops: float  # forward, per clip: convolutions and matrix products (FlopCounterMode skips elementwise ops)


def _blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Top-level children, with lists (such as stacked layers) opened up one level."""
    blocks = []
    for name, child in model.named_children():
        if isinstance(child, nn.ModuleList):
            blocks += [(f"{name}.{i}", m) for i, m in enumerate(child)]
        else:
            blocks.append((name, child))
    return blocks


def summarize(model: nn.Module, input_shape: tuple[int, int, int, int]) -> Summary:
    """Run one clip (batch of 1) through the model on the CPU, recording each block's output."""
    from torch.utils.flop_counter import FlopCounterMode

    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    for name, block in _blocks(model):
        def record(_m, _inp, out, name=name):
            out = out[0] if isinstance(out, (tuple, list)) else out
            if isinstance(out, nn.utils.rnn.PackedSequence):
                out = out.data
            shapes[name] = tuple(out.shape)

        hooks.append(block.register_forward_hook(record))
    T = input_shape[0]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_shape), torch.tensor([T]))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    rows = [(name, type(block).__name__, shapes.get(name, ()), sum(p.numel() for p in block.parameters()))
            for name, block in _blocks(model)]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return Summary(type(model).__name__, tuple(input_shape), rows, trainable, frozen,
                   counter.get_total_flops() / 1e9)


def summary_table(summary: Summary) -> Table:
    table = Table(title=f"{summary.name} — one clip of (T, C, H, W) = {summary.input_shape}",
                  caption=f"parameters: {summary.trainable + summary.frozen:,} ({summary.trainable:,} trainable, "
                          f"{summary.frozen:,} frozen) · forward: {summary.gflops:.3f} GFLOP per clip "
                          f"(convolutions and matrix products)\nshapes for a batch of 1; per-frame blocks fold time "
                          f"into the batch, so their first dimension is B·T")
    table.add_column("block")
    table.add_column("type")
    table.add_column("output shape", justify="right")
    table.add_column("parameters", justify="right")
    for name, kind, shape, params in summary.rows:
        table.add_row(name, kind, str(shape), f"{params:,}")
    return table
