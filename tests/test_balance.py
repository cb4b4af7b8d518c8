"""Imbalanced classes: class-balanced epochs, inverse-frequency loss weights, mean per-class accuracy."""

from __future__ import annotations

import random
from collections import Counter

import torch
import torch.nn.functional as F
from rich.console import Console

from vidclf.data.balance import balanced_order, class_weights
from vidclf.data.datasets import EpochSampler

quiet = Console(stderr=True, quiet=True)
LABELS = [0] * 50 + [1] * 5 + [2] * 20  # one class 10× the smallest


def test_a_balanced_epoch_draws_every_class_equally_and_each_small_class_clip_in_turns():
    order = balanced_order(LABELS, random.Random(0))
    assert len(order) == len(LABELS)
    per_class = Counter(LABELS[i] for i in order)
    assert per_class == {0: 25, 1: 25, 2: 25}
    small = Counter(i for i in order if LABELS[i] == 1)
    assert set(small.values()) == {5}  # 25 draws of 5 clips: each clip 5 times, none favoured
    large = [i for i in order if LABELS[i] == 0]
    assert len(set(large)) == 25  # half of the large class, no repeats


def test_balanced_epochs_are_seeded_by_seed_and_epoch_and_shard_into_equal_steps():
    def keys(epoch, rank=0, world=1, seed=0):
        sampler = EpochSampler(len(LABELS), shuffle=True, seed=seed, rank=rank, world=world, labels=LABELS)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert keys(1) == keys(1) and keys(1) != keys(2) and keys(1, seed=1) != keys(1)
    shards = [keys(3, rank, 2) for rank in range(2)]
    assert len(shards[0]) == len(shards[1]) == 38  # 75 keys padded to 76: every rank takes the same steps
    assert set(shards[0] + shards[1]) == set(keys(3))  # together the whole epoch (one key twice, as padding)
    draws = Counter(i for i, _, draw in keys(3) if LABELS[i] == 1)
    assert all(n == 5 for n in draws.values())
    repeats = [(i, draw) for i, _, draw in keys(3) if LABELS[i] == 1]
    assert len(set(repeats)) == 25  # each repeat of a clip has its own draw number: a different clip of it


def test_inverse_frequency_weights_make_every_class_weigh_the_same_in_the_loss():
    weights = torch.tensor(class_weights(LABELS, 4))
    counts = torch.tensor([50.0, 5.0, 20.0, 0.0])
    assert torch.allclose(weights * counts, torch.tensor([25.0, 25.0, 25.0, 0.0]))  # N / C per class
    assert class_weights([0, 1, 1, 0], 2) == [1.0, 1.0]


def test_training_with_weights_uses_them_in_the_loss(synth_data, tmp_path):
    from vidclf import distributed
    from vidclf.run import build_run
    from vidclf.stopping import StopSignal
    from vidclf.train import Trainer

    from tests.test_train import _cfg

    run = build_run(_cfg(synth_data, tmp_path, balance="weights"), device=torch.device("cpu"), rank=distributed.Rank(),
                    say=quiet.print)
    trainer = Trainer(run, console=quiet, show_progress=False, stop=StopSignal())
    assert run.loss_weights is not None and len(run.loss_weights) == len(run.classes)
    run.loss_weights = torch.tensor([4.0, 1.0, 1.0])  # as if class 0 were rare
    logits, labels = torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2, 2])
    expected = F.cross_entropy(logits, labels, reduction="none") * run.loss_weights[labels]
    assert torch.allclose(trainer.loss(logits, labels), expected.sum() / run.loss_weights[labels].sum())


def test_balanced_epochs_resume_exactly(synth_data, tmp_path):
    """(Loss weights are constants of the run: they cannot break resume.)"""
    from vidclf.train import fit

    balance = "sampler"
    from tests.test_train import StopAfterReads, _cfg, assert_same_weights

    whole = fit(_cfg(synth_data, tmp_path / "a", balance=balance), console=quiet, show_progress=False)
    cut = fit(_cfg(synth_data, tmp_path / "b", balance=balance), console=quiet, show_progress=False,
              stop=StopAfterReads(5))
    resumed = fit(_cfg(synth_data, tmp_path / "b", balance=balance), console=quiet, show_progress=False,
                  resume=cut.run_dir / "last.pt")
    assert_same_weights(whole.run_dir / "last.pt", resumed.run_dir / "last.pt")
    assert all("val_class_acc" in row for row in whole.history)
