"""Training throughput: is the device ever waiting for data?  (run by hand, never in CI)

For each architecture, in one run on one machine:
  (a) the model's training step alone, on random tensors already on the device;
  (b) vidclf's own training loop (`train.fit`) fed by a warm decode cache of a synth dataset;
  (c) the same loop with a cold cache (every clip decoded);
  (d) bare OpenCV decoding (grab/retrieve + resize, no vidclf code) with as many processes as (c) has workers.
Then for the ConvGRU: (e) a seed-style cell of the same size (six convolutions a step, input
convolutions inside the time loop) against vidclf's eager step, and with --compile (f) vidclf's step
under `torch.compile` (CUDA graphs on a GPU), both on random tensors like (a).
Prints clips/s, the fraction of step time spent waiting for data, and peak memory.

    python benchmarks/throughput.py --device cpu                  # 2-core CPU: 64², T=16, B=16
    python benchmarks/throughput.py --device cuda --size 112 --batch-size 32 --clips-per-class 64
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from vidclf.data.datasets import default_workers
from vidclf.device import autocast, autocast_dtype, resolve_device
from vidclf.models import build_model
from vidclf.models.conv_recurrent import ConvRecurrentConfig, ConvRecurrentNet
from vidclf.preprocess import Preprocess, in_channels
from vidclf.synth import write_dataset
from vidclf.train import TrainConfig, fit

console = Console(stderr=True)


def peak_memory(device: torch.device) -> str:
    """GPU: the peak since the last row (reset after each reading). CPU: the process's peak RSS so far."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        return f"{peak / 2**30:.2f} GiB (GPU)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (RSS, max so far)"


class SeedConvGRUCell(torch.nn.Module):
    """The seed's cell: six convolutions every step (Wz∗x, Uz∗h, Wr∗x, Ur∗h, Wh∗x, Uh∗(r⊙h)).

    `input_conv` is the identity, so the shared layer hands it raw inputs and nothing is hoisted.
    """

    def __init__(self, in_channels: int, hidden: int, kernel: int):
        super().__init__()

        def conv(cin: int, bias: bool) -> torch.nn.Conv2d:
            return torch.nn.Conv2d(cin, hidden, kernel, padding=kernel // 2, bias=bias)

        self.hidden = hidden
        self.input_conv = torch.nn.Identity()
        self.wz, self.wr, self.wh = conv(in_channels, True), conv(in_channels, True), conv(in_channels, True)
        self.uz, self.ur, self.uh = conv(hidden, False), conv(hidden, False), conv(hidden, False)

    def initial_state(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], self.hidden, *x.shape[2:])

    def step(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.sigmoid(self.wz(x) + self.uz(h))
        r = torch.sigmoid(self.wr(x) + self.ur(h))
        h = z * h + (1 - z) * torch.tanh(self.wh(x) + self.uh(r * h))
        return h, h


def model_step_rate(arch: str, args, device: torch.device, steps: int, *, model: torch.nn.Module | None = None,
                    compile: bool = False) -> float:
    """(a): forward, backward and optimizer step on random inputs already on the device, with the input
    channels the loop trains (rgb+diff: 6), so that (a) and (b) do the same work."""
    torch.manual_seed(0)
    channels = in_channels(Preprocess.input)
    model = (model or build_model(arch, 6, in_channels=channels)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    if compile:
        model = torch.compile(model, mode="reduce-overhead" if device.type == "cuda" else None)
    x = torch.randn(args.batch_size, args.frames, channels, args.size, args.size, device=device)
    lengths = torch.full((args.batch_size,), args.frames, device=device)
    labels = torch.randint(0, 6, (args.batch_size,), device=device)
    dtype = autocast_dtype(device, "auto")

    def step() -> None:
        if compile:
            torch.compiler.cudagraph_mark_step_begin()
        with autocast(device, dtype):
            loss = F.cross_entropy(model(x, lengths).float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * args.batch_size / (time.perf_counter() - start)


def _bare_decode(job: tuple[str, int, int]) -> int:
    import cv2

    path, frames, size = job
    cv2.setNumThreads(1)
    cap = cv2.VideoCapture(path)
    cap.set(cv2.CAP_PROP_N_THREADS, 1)
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    wanted = {int((i + 0.5) * total / frames) for i in range(frames)}
    got = 0
    for i in range(total):
        if not cap.grab():
            break
        if i in wanted:
            ok, frame = cap.retrieve()
            if ok:
                cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), (size, size), interpolation=cv2.INTER_LINEAR)
                got += 1
    cap.release()
    return got


def bare_decode_rate(paths: list[str], args, workers: int) -> float:
    """(d): what OpenCV alone delivers with `workers` processes, one decoder thread each."""
    jobs = [(p, args.frames, args.size) for p in paths]
    # spawn: forked children of a process that already ran OpenCV's thread pool can deadlock.
    with multiprocessing.get_context("spawn").Pool(max(workers, 1)) as pool:
        pool.map(_bare_decode, jobs[: len(jobs) // 4])  # start the pool's processes before the clock
        start = time.perf_counter()
        pool.map(_bare_decode, jobs, chunksize=4)
        return len(paths) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--archs", default="cnn-lstm,convgru")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--source-size", type=int, default=None, help="synth video size [default: --size]")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--clips-per-class", type=int, default=16)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--compile", action="store_true", help="add (f): the compiled ConvGRU step (slow to start)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.backends.cudnn.benchmark = True  # as `fit` sets it: the same for every row
    workers = default_workers() if args.workers is None else args.workers
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        # Written in a child process: OpenCV stays out of this one, as in `vidclf train`, so the loop's
        # workers fork (a process that ran OpenCV starts them from a forkserver, which costs seconds).
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            paths = pool.apply(write_dataset, (data,), dict(clips_per_class=args.clips_per_class, frames=args.frames,
                                                             size=args.source_size or args.size, seed=0))
        table = Table(title=f"{device}, B={args.batch_size}, T={args.frames}, {args.size}², {len(paths)} clips, "
                            f"{workers} workers, torch {torch.__version__}")
        for col in ("arch", "what", "clips/s", "data wait", "vs (a)", "peak memory"):
            table.add_column(col, justify="left" if col in ("arch", "what") else "right")

        def add(*cells: str) -> None:
            table.add_row(*cells)
            console.print("  ".join(cells))  # as measured, in case the run is cut short

        decode = bare_decode_rate([str(p) for p in paths], args, workers)
        for arch in args.archs.split(","):
            a = model_step_rate(arch, args, device, args.steps)
            add(arch, "(a) model step alone", f"{a:.1f}", "-", "1.00", peak_memory(device))
            cache = Path(tmp) / f"cache-{arch}"
            cfg = TrainConfig(data=str(data), arch=arch, num_frames=args.frames, size=args.size,
                              batch_size=args.batch_size, epochs=3, val_split=0.0, workers=workers,
                              device=str(device), cache=str(cache), out=str(Path(tmp) / "models"))
            # Epoch 1 decodes every clip (and starts the workers); by epoch 3 the cache is warm.
            history = fit(cfg, console=Console(stderr=True, quiet=True), show_progress=False).history
            cold, warm = history[0], history[-1]
            add(arch, "(b) vidclf loop, warm cache", f"{warm['clips_per_s']:.1f}",
                          f"{warm['data_wait']:.0%}", f"{warm['clips_per_s'] / a:.2f}", peak_memory(device))
            add(arch, "(c) vidclf loop, cold cache", f"{cold['clips_per_s']:.1f}",
                          f"{cold['data_wait']:.0%}", f"{cold['clips_per_s'] / a:.2f}", peak_memory(device))
        add("-", f"(d) bare OpenCV decode, {workers} processes", f"{decode:.1f}", "-", "-", "-")
        seed_net = ConvRecurrentNet(6, ConvRecurrentConfig(in_channels=in_channels(Preprocess.input)), SeedConvGRUCell)
        rounds = [(model_step_rate("convgru", args, device, args.steps),
                   model_step_rate("convgru", args, device, args.steps, model=seed_net)) for _ in range(3)]
        eager, seed = max(r[0] for r in rounds), max(r[1] for r in rounds)  # interleaved, best of 3 each
        add("convgru", "(e) seed-style six-conv cell, step alone", f"{seed:.1f}", "-",
            f"eager {eager / seed:.2f}× this", peak_memory(device))
        if args.compile:
            fast = model_step_rate("convgru", args, device, args.steps, compile=True)
            add("convgru", "(f) torch.compile step alone", f"{fast:.1f}", "-", f"{fast / eager:.2f}× eager",
                peak_memory(device))
        Console().print(table)


if __name__ == "__main__":
    main()
