"""The training recipe's pieces: the learning-rate schedule per step, label smoothing, mixup and cutmix."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from rich.console import Console

from vidclf.mixing import Mixed, mix_clips
from vidclf.run import TrainConfig, _check_recipe, _scheduler
from vidclf.train import fit

quiet = Console(stderr=True, quiet=True)


def _rates(steps_per_epoch: int, **cfg) -> list[float]:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    config = TrainConfig(**cfg)
    scheduler = _scheduler(optimizer, config, steps_per_epoch)
    rates = []
    for _ in range(config.epochs * steps_per_epoch):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_warmup_rises_every_step_and_the_decay_changes_once_an_epoch():
    rates = _rates(4, epochs=3, schedule="cosine")
    assert rates == pytest.approx([0.5 * (1 + math.cos(math.pi * (s // 4) / 3)) for s in range(12)])
    warm = _rates(4, epochs=3, schedule="constant", warmup=1.5)
    assert warm == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6] + [1.0] * 7)
    warm_cosine = _rates(2, epochs=3, schedule="cosine", warmup=1)  # up to lr, then the cosine over 2 epochs
    assert warm_cosine == pytest.approx([0.5, 1.0, 1.0, 1.0, 0.5, 0.5])


def test_step_schedule_drops_tenfold_after_each_third():
    assert _rates(2, epochs=3, schedule="step") == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    with pytest.raises(ValueError, match="cosine, step, constant, got 'linear'"):
        _check_recipe(TrainConfig(schedule="linear"))


def _batch():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 4, 3, 8, 10, generator=g)
    return x, torch.arange(6), torch.tensor([4, 1, 2, 3, 4, 4])


def test_mixup_blends_each_clip_with_its_partner_by_the_weight():
    x, labels, lengths = _batch()
    torch.manual_seed(0)
    mixed = mix_clips(x, labels, lengths, kind="mixup", alpha=0.4, generator=torch.Generator().manual_seed(1))
    partner = mixed.partner_labels  # labels are 0..5, so they name the partner clips
    assert 0 < mixed.weight < 1 and sorted(partner.tolist()) == list(range(6))
    assert torch.allclose(mixed.x, mixed.weight * x + (1 - mixed.weight) * x[partner])
    assert torch.equal(mixed.lengths, torch.maximum(lengths, lengths[partner]))


def test_cutmix_pastes_one_box_through_time_and_its_area_sets_the_weight():
    x, labels, lengths = _batch()
    torch.manual_seed(3)
    mixed = mix_clips(x, labels, lengths, kind="cutmix", alpha=1.0, generator=torch.Generator().manual_seed(2))
    partner = mixed.partner_labels
    pasted = (mixed.x == x[partner]) & (mixed.x != x)  # (B, T, C, H, W)
    swapped = [b for b in range(6) if partner[b] != b]
    box = pasted[swapped[0], 0, 0]
    assert box.any() and all(torch.equal(pasted[b, t, c], box) for b in swapped for t in range(4) for c in range(3))
    rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
    assert box[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # one rectangle
    assert mixed.weight == pytest.approx(1 - box.sum().item() / box.numel())


def test_mixing_asks_for_a_known_kind_and_a_positive_alpha():
    x, labels, lengths = _batch()
    with pytest.raises(ValueError, match="none, mixup, cutmix"):
        mix_clips(x, labels, lengths, kind="blend", alpha=0.2, generator=torch.Generator())
    with pytest.raises(ValueError, match="mix-alpha"):
        mix_clips(x, labels, lengths, kind="mixup", alpha=0.0, generator=torch.Generator())


def test_smoothed_and_mixed_losses_are_their_known_mixtures(synth_data, tmp_path):
    from tests.test_train import _built

    trainer = _built(synth_data, tmp_path, label_smoothing=0.2)
    logits, labels = torch.randn(5, 3), torch.tensor([0, 2, 1, 1, 0])
    smoothed = 0.8 * F.cross_entropy(logits, labels, reduction="none") + 0.2 * uniform_per_clip(logits)
    assert float(trainer.loss(logits, labels)) == pytest.approx(float(smoothed.mean()), rel=1e-6)
    partner = torch.tensor([2, 2, 0, 1, 1])
    partner_smoothed = 0.8 * F.cross_entropy(logits, partner, reduction="none") + 0.2 * uniform_per_clip(logits)
    mixed = Mixed(torch.zeros(0), torch.zeros(0), partner, weight=0.3)
    assert float(trainer.loss(logits, labels, mixed)) == pytest.approx(
        float(0.3 * smoothed.mean() + 0.7 * partner_smoothed.mean()), rel=1e-6)


def uniform_per_clip(logits: torch.Tensor) -> torch.Tensor:
    return -F.log_softmax(logits, dim=1).mean(dim=1)


def test_a_run_with_warmup_smoothing_and_cutmix_resumes_exactly(synth_data, tmp_path):
    """Every draw of the recipe (partners, boxes, weights) replays on resume, and so does the schedule."""
    from tests.test_train import StopAfterReads, _cfg

    recipe = dict(warmup=0.5, label_smoothing=0.1, mix="cutmix", mix_alpha=0.4)
    whole = fit(_cfg(synth_data, tmp_path / "a", **recipe), console=quiet, show_progress=False)
    cut = fit(_cfg(synth_data, tmp_path / "b", **recipe), console=quiet, show_progress=False, stop=StopAfterReads(2))
    assert cut.interrupted
    rest = fit(_cfg(synth_data, tmp_path / "b", **recipe), console=quiet, show_progress=False,
               resume=cut.run_dir / "last.pt")
    assert [r["lr"] for r in rest.history] == [r["lr"] for r in whole.history]
    for a, b in zip(whole.model.state_dict().values(), rest.model.state_dict().values()):
        assert torch.equal(a, b)


def test_train_rejects_a_bad_recipe_in_one_line_before_reading_any_data(tmp_path):
    from typer.testing import CliRunner

    from vidclf.cli import app

    for flags, message in [(["--mix", "blend"], "--mix should be one of none, mixup, cutmix, got 'blend'"),
                           (["--mix", "mixup", "--mix-alpha", "0"], "--mix-alpha should be > 0"),
                           (["--label-smoothing", "1"], "--label-smoothing should be in [0, 1)"),
                           (["--warmup", "-1"], "--warmup should be ≥ 0 epochs")]:
        result = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "absent"), *flags])
        assert result.exit_code == 1 and result.stderr.strip().startswith(f"error: {message}"), result.output
        assert len(result.stderr.strip().splitlines()) == 1


def test_a_last_pt_with_the_earlier_per_epoch_scheduler_resumes_from_the_step_it_reached(synth_data, tmp_path):
    """Checkpoints written before the schedule went per step hold a CosineAnnealingLR's state."""
    from tests.test_train import StopAfterReads, _cfg

    cut = fit(_cfg(synth_data, tmp_path), console=quiet, show_progress=False, stop=StopAfterReads(2))
    last = cut.run_dir / "last.pt"
    saved = torch.load(last, weights_only=True)
    assert saved["epoch"] == 0 and saved["step"] == 3  # mid-epoch
    optimizer = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=1e-3)
    saved["scheduler"] = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=2).state_dict()
    saved["optimizer"]["param_groups"][0]["lr"] = 1e-3  # the per-epoch rate, unchanged within the epoch
    torch.save(saved, last)
    rest = fit(_cfg(synth_data, tmp_path), console=quiet, show_progress=False, resume=last)
    whole = fit(_cfg(synth_data, tmp_path / "whole"), console=quiet, show_progress=False)
    assert [r["lr"] for r in rest.history] == [r["lr"] for r in whole.history]
    for a, b in zip(whole.model.state_dict().values(), rest.model.state_dict().values()):
        assert torch.equal(a, b)


def test_resuming_with_more_epochs_follows_the_new_schedule_from_the_first_step(synth_data, tmp_path):
    from vidclf import checkpoint, distributed
    from vidclf.run import build_run
    from tests.test_train import _cfg

    short = fit(_cfg(synth_data, tmp_path, epochs=1), console=quiet, show_progress=False)
    saved = checkpoint.load(short.run_dir / "last.pt")
    assert saved["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0)  # the cosine's end
    run = build_run(_cfg(synth_data, tmp_path, epochs=3), device=torch.device("cpu"),
                    rank=distributed.Rank(), say=quiet.print, resume_from=saved, run_dir=short.run_dir)
    assert run.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.75)  # epoch 2 of 3: (1 + cos π/3) / 2
