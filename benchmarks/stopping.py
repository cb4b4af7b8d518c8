"""What stopping together and saving mid-epoch cost.  (run by hand, never in CI)

Under torchrun (`--nproc_per_node 2` or more), in one run, the model's DDP training steps on random
clips, in interleaved blocks:

  bare          the step alone
  every step    the step, then `Agreement.after_step()` summing every step: async, on a gloo group, read a step later
  every 4th     the same, summing every 4th step (what vidclf does)
  blocking      the step, then a blocking all-reduce of the flags each step (the simple alternative)
  bare again    the step alone, last in each round: the noise floor

and, separately, the agreement's own cost per call with no step between (the worst case: nothing to
hide it behind). Then, on rank 0, the bytes and seconds of writing last.pt (model, optimizer and the
rest, through `checkpoint.save`, fsync included) for the models a user trains, which with the epoch
length says what a `--save-every` period costs.

    torchrun --standalone --nproc_per_node 2 benchmarks/stopping.py --device cpu
    torchrun --standalone --nproc_per_node 8 benchmarks/stopping.py --device cuda --batch-size 32 --size 112
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from vidclf import checkpoint, distributed
from vidclf.device import resolve_device
from vidclf.models import build_model
from vidclf.stopping import Agreement, StopSignal

MODELS = {  # what `vidclf train` builds for these options, 101 classes (UCF101)
    "cnn-lstm": ("cnn-lstm", {}),
    "convgru": ("convgru", {}),
    "cnn-lstm resnet18": ("cnn-lstm", {"backbone": "resnet18"}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="steps per block")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    device = resolve_device(args.device)
    rank = distributed.setup(device.type)
    device = distributed.rank_device(device, rank)
    say = print if rank.is_main else (lambda *a, **k: None)
    say(f"{rank.world} ranks on {device}, batches of {args.batch_size} × {args.frames} frames at {args.size}², "
        f"torch {torch.__version__}")
    agreement = Agreement(StopSignal(), save_every=0, is_main=rank.is_main, every=1)
    fourth = Agreement(StopSignal(), save_every=0, is_main=rank.is_main, every=4)
    step = _stepper(device, rank, args)
    after = {"bare": lambda: None, "every step": agreement.after_step, "every 4th": fourth.after_step,
             "blocking": _blocking(agreement), "bare again": lambda: None}
    per_step = {name: [] for name in after}
    for _ in range(args.rounds):
        for name, then in after.items():
            seconds = _block(step, then, args.steps, device)
            per_step[name].append(seconds / args.steps)
        agreement.epoch_end()
        fourth.epoch_end()
    base = statistics.median(per_step["bare"])
    say("\n| per step | median ms | × bare |\n|---|---:|---:|")
    for name, values in per_step.items():
        say(f"| {name} | {statistics.median(values) * 1e3:.2f} | {statistics.median(values) / base:.3f} |")
    calls = 2000
    start = time.perf_counter()
    for _ in range(calls):
        agreement.after_step()
    agreement.epoch_end()
    say(f"\nthe sum alone, every call, no step between: {(time.perf_counter() - start) / calls * 1e6:.0f} µs a call")
    if rank.is_main:
        _saves()
    distributed.teardown()


def _stepper(device: torch.device, rank: distributed.Rank, args):
    torch.manual_seed(0)
    model = build_model("cnn-lstm", 101, in_channels=6).to(device)
    net = torch.nn.parallel.DistributedDataParallel(model) if rank.world > 1 else model
    optimizer = torch.optim.AdamW(model.parameters())
    x = torch.randn(args.batch_size, args.frames, 6, args.size, args.size, device=device)
    lengths = torch.full((args.batch_size,), args.frames, device=device)
    labels = torch.randint(0, 101, (args.batch_size,), device=device)

    def step() -> None:
        loss = F.cross_entropy(net(x, lengths), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def _blocking(agreement: Agreement):
    def after() -> bool:
        flags = torch.tensor([float(agreement.stop.requested), 0.0])
        if agreement.group is not None:
            dist.all_reduce(flags, group=agreement.group)
        return bool(flags[0] > 0)
    return after


def _block(step, then, steps: int, device: torch.device) -> float:
    step()  # warm
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
        then()
    _sync(device)
    return time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _saves() -> None:
    print("\n| last.pt of | MB | seconds to write (median of 5) |\n|---|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for label, (arch, options) in MODELS.items():
            model = build_model(arch, 101, in_channels=6, **options)
            optimizer = torch.optim.AdamW(model.parameters())
            for p in model.parameters():  # optimizer state as after a step: two moments per weight
                p.grad = torch.zeros_like(p)
            optimizer.step()
            state = {"model": {"name": arch}, "classes": [str(i) for i in range(101)], "preprocess": {},
                     "state_dict": model.state_dict(), "optimizer": optimizer.state_dict()}
            path = Path(tmp) / "last.pt"
            times = []
            for _ in range(5):
                start = time.perf_counter()
                checkpoint.save(state, path)
                times.append(time.perf_counter() - start)
            print(f"| {label} | {path.stat().st_size / 1e6:.1f} | {statistics.median(times):.3f} |")


if __name__ == "__main__":
    main()
