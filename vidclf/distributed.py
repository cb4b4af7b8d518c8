"""Multi-process training through PyTorch's own engine: `torchrun` sets the environment, we follow it."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Rank:
    rank: int = 0  # this process among all
    world: int = 1  # number of processes
    local: int = 0  # this process on its machine: picks the GPU

    @property
    def is_main(self) -> bool:
        """Only the main process writes checkpoints, metrics.csv and tables."""
        return self.rank == 0


def setup(device_type: str) -> Rank:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); a no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Rank()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return current()


def current() -> Rank:
    """This process's rank in a group already set up (by `setup`), or a lone process's."""
    if not dist.is_initialized():
        return Rank()
    return Rank(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def launched_as_main() -> bool:
    """Whether this process is the main one, before the group is joined: torchrun's RANK says."""
    return os.environ.get("RANK", "0") == "0"


def rank_device(device: torch.device, rank: Rank) -> torch.device:
    """Each rank's own GPU (its local rank) under torchrun; on one process, the device asked for."""
    if device.type != "cuda":
        return device
    device = torch.device("cuda", rank.local if rank.world > 1 else device.index or 0)
    torch.cuda.set_device(device)
    return device


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum counters over all processes, so every rank reports the metrics of the whole dataset."""
    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def gather(obj) -> list:
    """Every process's `obj`, in rank order (a one-item list on one process)."""
    if not dist.is_initialized():
        return [obj]
    box = [None] * dist.get_world_size()
    dist.all_gather_object(box, obj)
    return box


def broadcast(obj):
    """The main process's value on every process (e.g. the run folder's name)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
