"""Forward and forward+backward speed of every architecture, against this machine's matmul peak.

Run by hand: `python benchmarks/models.py [--device cpu|cuda] [--batch 16] [--seconds 2]`. GFLOP counts come from
FlopCounterMode (convolutions and matrix products only; elementwise ops and nn.LSTM's fused kernel
are not counted, about 1-2% of the CNN+LSTM's work at its defaults), and a training step is
counted as 3x the forward FLOPs. On CUDA, TF32 is switched off so that the convolutions run in the
same float32 as the reference matrix multiply.
"""

from __future__ import annotations

import argparse
import torch
from rich.console import Console
from rich.table import Table
from torch.utils import benchmark
from torch.utils.flop_counter import FlopCounterMode

from vidclf.models import MODELS, build_model

SIZES = [(16, 64), (16, 112)]  # (frames, height = width)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device: torch.device, *, seconds: float) -> float:
    """Median seconds per call, over at least `seconds` of calls after two warm-up calls."""
    for _ in range(2):
        fn()
    _sync(device)
    return benchmark.Timer("fn()", globals={"fn": fn}).blocked_autorange(min_run_time=seconds).median


def matmul_peak(device: torch.device, seconds: float) -> float:
    """GFLOP/s of a large float32 torch.mm."""
    n = 2048 if device.type == "cpu" else 8192
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    return 2 * n**3 / _time(lambda: torch.mm(a, b), device, seconds=seconds) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=2.0, help="time each measurement this long")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # true float32, as the peak
    table = Table(title=f"{device.type}, batch {args.batch}, float32, {torch.get_num_threads()} threads; "
                        "peak: a 2048² (GPU 8192²) torch.mm timed just before the row")
    for col in ("model", "T×H×W", "GFLOP/clip fwd", "peak GFLOP/s", "fwd ms", "fwd GFLOP/s", "fwd % peak",
                "train ms", "train GFLOP/s", "train % peak", "clips/s train"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for name in MODELS:
        for frames, size in SIZES:
            torch.manual_seed(0)
            model = build_model(name, 10).to(device)
            x = torch.randn(args.batch, frames, 3, size, size, device=device)
            lengths = torch.full((args.batch,), frames, device=device)
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                model.eval()(x[:1], lengths[:1])
            gflop = counter.get_total_flops() / 1e9  # per clip

            def infer():
                with torch.no_grad():
                    model(x, lengths)

            def train():
                model.zero_grad(set_to_none=True)
                model(x, lengths).sum().backward()

            # A shared or throttled machine drifts: the peak is measured beside each row, not once.
            peak = matmul_peak(device, args.seconds)
            model.eval()
            t_fwd = _time(infer, device, seconds=args.seconds)
            model.train()
            t_train = _time(train, device, seconds=args.seconds)
            fwd_rate = gflop * args.batch / t_fwd
            train_rate = 3 * gflop * args.batch / t_train
            table.add_row(name, f"{frames}×{size}×{size}", f"{gflop:.2f}", f"{peak:.0f}", f"{t_fwd * 1e3:.0f}", f"{fwd_rate:.0f}",
                          f"{fwd_rate / peak:.0%}", f"{t_train * 1e3:.0f}", f"{train_rate:.0f}",
                          f"{train_rate / peak:.0%}", f"{args.batch / t_train:.0f}")
    Console(width=170).print(table)


if __name__ == "__main__":
    main()
