"""Training throughput: is the device ever waiting for data?  (run by hand, never in CI)

For each architecture, in one run on one machine:
  (a) the model's training step alone, on random tensors already on the device;
  (b) vidclf's own training loop (`train.fit`) fed by a warm decode cache of a synth dataset;
  (c) the same loop with a cold cache (every clip decoded);
  (d) bare OpenCV decoding (grab/retrieve + resize, no vidclf code) with as many processes as (c) has workers.
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

from vidclf.device import autocast, autocast_dtype, resolve_device
from vidclf.models import build_model
from vidclf.synth import write_dataset
from vidclf.train import TrainConfig, default_workers, fit

console = Console(stderr=True)


def peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB (GPU)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (RSS)"


def model_step_rate(arch: str, args, device: torch.device, steps: int) -> float:
    """(a): forward, backward and optimizer step on random inputs already on the device."""
    torch.manual_seed(0)
    model = build_model(arch, 6).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(args.batch_size, args.frames, 3, args.size, args.size, device=device)
    lengths = torch.full((args.batch_size,), args.frames, device=device)
    labels = torch.randint(0, 6, (args.batch_size,), device=device)
    dtype = autocast_dtype(device, "auto")

    def step() -> None:
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
        pool.map(_bare_decode, jobs[: len(jobs) // 4])  # start the processes and warm the page cache
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
    args = parser.parse_args()
    device = resolve_device(args.device)
    workers = default_workers() if args.workers is None else args.workers
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        paths = write_dataset(data, clips_per_class=args.clips_per_class, frames=args.frames,
                              size=args.source_size or args.size, seed=0)
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
        Console().print(table)


if __name__ == "__main__":
    main()
