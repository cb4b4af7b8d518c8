"""`train --tensorboard`: the curves as TensorBoard's own reader sees them, across an interruption."""

from __future__ import annotations

import sys

import pytest
from rich.console import Console

pytest.importorskip("tensorboard")  # an optional extra; CI installs it with the test extra

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from tests.test_train import StopAfterReads, _cfg  # noqa: E402
from vidclf.train import fit  # noqa: E402

quiet = Console(stderr=True, quiet=True)


def _read(run_dir) -> EventAccumulator:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return events


def test_curves_continue_across_an_interruption_with_every_step_once(synth_data, tmp_path):
    whole = fit(_cfg(synth_data, tmp_path / "a", tensorboard=True), console=quiet, show_progress=False)
    cut = fit(_cfg(synth_data, tmp_path / "b", tensorboard=True), console=quiet, show_progress=False,
              stop=StopAfterReads(5))  # stopped after step 2 of epoch 2
    fit(_cfg(synth_data, tmp_path / "b", tensorboard=True), console=quiet, show_progress=False,
        resume=cut.run_dir / "last.pt")
    a, b = _read(whole.run_dir), _read(cut.run_dir)
    for events in (a, b):
        assert [e.step for e in events.Scalars("step/loss")] == list(range(8))  # 2 epochs of 4 steps, each once
        assert [e.step for e in events.Scalars("epoch/val_acc")] == [3, 7]  # an epoch's row on its last step
        assert "val/confusion_matrix" in events.Tags()["images"]
    assert [e.value for e in a.Scalars("step/loss")] == pytest.approx([e.value for e in b.Scalars("step/loss")])
    assert [e.value for e in a.Scalars("epoch/train_loss")] == pytest.approx(
        [row["train_loss"] for row in whole.history])
    assert {f"epoch/{k}" for k in ("train_acc", "val_loss", "val_class_acc", "lr")} <= set(a.Tags()["scalars"])


def test_without_the_package_the_flag_fails_at_once_saying_how_to_install_it(synth_data, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from vidclf.cli import app

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now raises ImportError
    result = CliRunner().invoke(app, ["train", "--data", str(synth_data), "--out", str(tmp_path), "--tensorboard"])
    assert result.exit_code == 1
    assert "pip install 'vidclf[tensorboard]'" in result.output and not list(tmp_path.iterdir())
