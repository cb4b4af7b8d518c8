"""The training loop's promises: exact resume, early stopping, and two-process data coverage."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console

from vidclf.data.files import scan
from vidclf.stopping import StopSignal
from vidclf.train import TrainConfig, fit

quiet = Console(stderr=True, quiet=True)


class StopAfterReads(StopSignal):
    """Says "stop" from its n-th look on: the loop looks once per step and once per epoch end. With
    `kill`, the process dies at that look instead, as under SIGKILL: nothing of the loop runs after it."""

    def __init__(self, reads: int, *, kill: bool = False):
        self.reads, self.kill = reads, kill

    @property
    def requested(self) -> bool:
        self.reads -= 1
        if self.reads < 0 and self.kill:
            raise SystemExit("killed")
        return self.reads < 0


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(data=str(data), num_frames=8, size=32, batch_size=4, epochs=2, workers=0, cache=None,
                out=str(out), device="cpu", model={"dropout": 0.1})
    return TrainConfig(**{**base, **kw})


def assert_same_weights(a: Path, b: Path) -> None:
    """Two checkpoints hold exactly the same weights."""
    x, y = (torch.load(p, weights_only=True)["state_dict"] for p in (a, b))
    assert x.keys() == y.keys()
    for key, value in x.items():
        assert torch.equal(value, y[key]), key


@pytest.fixture(scope="module")
def uninterrupted(synth_data, tmp_path_factory) -> Path:
    """last.pt of the run `_cfg` describes, never stopped."""
    return fit(_cfg(synth_data, tmp_path_factory.mktemp("whole")), console=quiet, show_progress=False).run_dir / "last.pt"


@pytest.mark.parametrize("cached", [False, True])
def test_resume_after_interruption_matches_an_uninterrupted_run(synth_data, tmp_path, cached):
    """With the decode cache, the interrupted run's first epoch filled it and the resumed one reads it:
    the same pixels as the uninterrupted run, whose epochs were cold and then warm."""
    def cfg(name: str) -> TrainConfig:
        return _cfg(synth_data, tmp_path / name, cache=str(tmp_path / name / "cache") if cached else None)

    whole = fit(cfg("a"), console=quiet, show_progress=False)
    # 15 training clips, batches of 4: 4 steps an epoch; the 6th look falls on step 1 of epoch 2.
    cut = fit(cfg("b"), console=quiet, show_progress=False, stop=StopAfterReads(5))
    assert cut.interrupted
    saved = torch.load(cut.run_dir / "last.pt", weights_only=True)
    assert (saved["epoch"], saved["step"]) == (1, 1)
    resumed = fit(cfg("b"), console=quiet, show_progress=False, resume=cut.run_dir / "last.pt")
    assert not resumed.interrupted and resumed.run_dir == cut.run_dir
    assert_same_weights(whole.run_dir / "last.pt", resumed.run_dir / "last.pt")
    a, b = (torch.load(r.run_dir / "last.pt", weights_only=True)["history"] for r in (whole, resumed))
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]


def test_patience_stops_early(synth_data, tmp_path):
    result = fit(_cfg(synth_data, tmp_path, epochs=8, lr=0.0, patience=1), console=quiet, show_progress=False)
    accs = [row["val_acc"] for row in result.history]
    assert len(accs) < 8  # with a learning rate of 0, accuracy soon stops improving
    assert accs[-1] <= max(accs[:-1])  # it stopped right after an epoch that did not beat the best


def test_two_processes_cover_the_data_of_one(synth_data, tmp_path):
    """torchrun with 2 CPU processes (gloo): the ranks together see every training clip once."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "vidclf", "train", "--data", str(synth_data), "--epochs", "1", "--frames", "8", "--size", "32",
           "--batch-size", "4", "--workers", "0", "--no-cache", "--out", str(tmp_path), "--device", "cpu",
           "--val-split", "0.34", "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = tmp_path.glob("cnn-lstm-*")  # only rank 0 wrote
    assert {p.name for p in run.iterdir()} == {"best.pt", "last.pt", "metrics.csv", "curves.png"}
    (row,) = csv.DictReader((run / "metrics.csv").open())
    assert int(row["train_clips"]) == 12  # 3 classes × 4 train clips, split 6 + 6 across the ranks



def test_compile_option_trains_a_compiled_model(synth_data, tmp_path, monkeypatch):
    """--compile goes through torch.compile (default mode on the CPU; CUDA graphs are for GPUs).

    The aot_eager backend traces exactly as inductor does but needs no C++ compiler, which CI may lack.
    """
    real_compile, modes = torch.compile, []

    def compile_with_aot_eager(model, mode=None):
        modes.append(mode)
        return real_compile(model, backend="aot_eager")

    monkeypatch.setattr(torch, "compile", compile_with_aot_eager)
    result = fit(_cfg(synth_data, tmp_path, arch="convgru", epochs=1,
                      model={"hidden_channels": (4,), "kernel_sizes": (3,), "stem_channels": 4}, compile=True),
                 console=quiet, show_progress=False)
    assert modes == [None]
    assert result.history[0]["train_clips"] > 0 and result.best is not None


RANK_SCRIPT = """
import os, sys, torch
from rich.console import Console
from vidclf.train import TrainConfig, fit
data, out, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
cfg = TrainConfig(data=data, num_frames=8, size=32, batch_size=1, epochs=2, workers=0, cache=None, out=out,
                  device="cpu", seed=seed, val_split=0.34)
result = fit(cfg, console=Console(stderr=True, quiet=True), show_progress=False)
torch.save({"steps": result.steps, "params": dict(result.model.named_parameters()), "history": result.history},
           f"{out}/rank{os.environ['RANK']}.pt")
"""


def test_torchrun_with_bad_files_on_uneven_ranks_steps_together_and_ends_with_equal_weights(synth_data, tmp_path):
    """The hang of issue 13: a rank whose batch held only bad files skipped its step while the other
    all-reduced. Now bad files are replaced, so both ranks take every step and end identical."""
    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    for i, folder in enumerate(sorted(p for p in data.iterdir() if p.is_dir())):
        for j in range(2):
            (folder / f"bad_{i}{j}.mp4").write_text("a text file named .mp4")
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29518",
           str(script), str(data), str(tmp_path), "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    splits = scan(data, val_split=0.34, seed=1)
    steps = -(-len(splits.train) // 2)  # batches of 1, the training set shared by 2 ranks
    assert a["steps"] == b["steps"] == 2 * steps  # 2 epochs
    for name, value in a["params"].items():
        assert torch.equal(value, b["params"][name]), name
    assert all(row["train_clips"] == 2 * steps for row in a["history"])  # every step of every rank had a clip
    readable = [s for s in splits.val if not Path(s.path).name.startswith("bad_")]
    assert all(row["val_clips"] == len(readable) for row in a["history"])  # each counted once, none twice


def _built(synth_data, tmp_path, **kw):
    from vidclf import distributed
    from vidclf.run import build_run
    from vidclf.train import Trainer

    cfg = _cfg(synth_data, tmp_path, **kw)
    run = build_run(cfg, device=torch.device("cpu"), rank=distributed.Rank(), say=quiet.print)
    return Trainer(run, console=quiet, show_progress=False, stop=StopSignal())


def test_one_training_step_updates_the_weights_and_counts_its_clips(synth_data, tmp_path):
    trainer = _built(synth_data, tmp_path)
    batch = next(iter(trainer.run.train_loader))
    before = [p.detach().clone() for p in trainer.run.model.parameters()]
    totals, n = trainer.train_step(batch, epoch=0, step=0)
    loss_sum, correct = totals.tolist()  # on the device until read: no sync per step
    assert n == 4 and 0 <= correct <= 4 and loss_sum > 0 and trainer.steps == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.run.model.parameters()))


def test_validation_counts_every_validation_clip_once(synth_data, tmp_path):
    trainer = _built(synth_data, tmp_path)
    val = trainer.validate()
    assert val["val_clips"] == len(trainer.run.val_loader.dataset) == 3 and 0 <= val["val_acc"] <= 1 and val["val_loss"] > 0
    assert val["val_class_acc"] == val["val_acc"]  # one clip of each class: the mean of the classes is the accuracy


def test_checkpoint_decision_keeps_the_best_and_stops_when_patience_runs_out(synth_data, tmp_path):
    from vidclf.trainlog import METRIC_COLUMNS

    trainer = _built(synth_data, tmp_path, patience=2)
    trainer.train_step(next(iter(trainer.run.train_loader)), epoch=0, step=0)
    row = trainer.epoch_row(0, {"loss": 4.0, "correct": 2.0, "count": 4.0, "wait": 0.1, "seconds": 1.0})
    assert tuple(row) == METRIC_COLUMNS and row["train_loss"] == 1.0 and row["train_acc"] == 0.5
    run_dir = trainer.run.run_dir
    assert {p.name for p in run_dir.iterdir()} == {"metrics.csv", "curves.png"}
    for acc, stop, best in [(0.5, False, 0.5), (0.8, False, 0.8), (0.7, False, 0.8), (0.8, True, 0.8)]:
        assert trainer.checkpoint({**row, "val_acc": acc}) is stop
        assert trainer.run.state.best == best
    saved = torch.load(run_dir / "best.pt", weights_only=True)
    assert saved["best_metric"] == 0.8 and (run_dir / "last.pt").exists()


def test_cli_options_map_onto_the_train_config():
    from vidclf.cli.train import _new_config

    options = dict(data="d", arch="convgru", frames=8, size=32, batch_size=2, epochs=None, no_cache=True, cache=None,
                   backbone=None, pretrained=None, freeze_backbone=False, rnn=None, hidden_size=None, layers=None,
                   bidirectional=False, dropout=0.1, hidden_channels="8,8", kernel_sizes=None, quiet=True,
                   verbose=False, resume=None, input=None, init=None, backbone_lr=0.1)
    cfg = _new_config(options, say=print)
    assert (cfg.data, cfg.arch, cfg.num_frames, cfg.size, cfg.batch_size, cfg.epochs) == ("d", "convgru", 8, 32, 2, 10)
    assert cfg.cache is None and cfg.model == {"dropout": 0.1, "hidden_channels": (8, 8)}
    assert (cfg.input, cfg.mean, cfg.init, cfg.backbone_lr) == ("rgb+diff", None, None, 0.1)
    defaults = _new_config({**options, "arch": None, "frames": None, "size": None}, say=print)
    assert (defaults.arch, defaults.num_frames, defaults.size) == ("cnn-lstm", 16, 64)


def test_cli_train_gives_the_signal_handlers_back(synth_data, tmp_path):
    """Ctrl-C and SIGTERM stop training gracefully, and afterwards stop the caller again (a test runner, say)."""
    import signal

    from typer.testing import CliRunner

    from vidclf.cli import app

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    result = CliRunner().invoke(app, ["train", "--data", str(synth_data), "--epochs", "1", "--frames", "4", "--size",
                                      "32", "--workers", "0", "--no-cache", "--device", "cpu", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_a_kill_after_a_mid_epoch_save_resumes_from_that_save_to_the_same_weights(synth_data, tmp_path, uninterrupted):
    """--save-every writes last.pt within the epoch; a kill loses only the steps after it."""
    cfg = _cfg(synth_data, tmp_path / "b", save_every=1e-9)  # a save after every step
    with pytest.raises(SystemExit):
        fit(cfg, console=quiet, show_progress=False, stop=StopAfterReads(6, kill=True))  # killed at step 2 of epoch 2
    (last,) = (tmp_path / "b").glob("*/last.pt")
    saved = torch.load(last, weights_only=True)
    assert (saved["epoch"], saved["step"]) == (1, 1) and saved["partial"]["count"] == 4  # one batch of 4 clips
    resumed = fit(cfg, console=quiet, show_progress=False, resume=last)
    assert_same_weights(uninterrupted, resumed.run_dir / "last.pt")
    a, b = (torch.load(p, weights_only=True)["history"] for p in (uninterrupted, last))
    assert [r["train_clips"] for r in a] == [r["train_clips"] for r in b]


def test_a_stop_after_an_epochs_last_step_saves_before_validating_and_resume_validates(synth_data, tmp_path,
                                                                                      uninterrupted):
    """A scheduler's grace period may not cover validation: the stop saves at once, resume validates."""
    cut = fit(_cfg(synth_data, tmp_path / "b"), console=quiet, show_progress=False, stop=StopAfterReads(3))
    saved = torch.load(cut.run_dir / "last.pt", weights_only=True)
    assert (saved["epoch"], saved["step"]) == (0, 4) and saved["history"] == []  # 4 of 4 steps, not validated
    resumed = fit(_cfg(synth_data, tmp_path / "b"), console=quiet, show_progress=False, resume=cut.run_dir / "last.pt")
    assert_same_weights(uninterrupted, resumed.run_dir / "last.pt")
    a, b = (torch.load(p, weights_only=True)["history"] for p in (uninterrupted, resumed.run_dir / "last.pt"))
    for key in ("val_acc", "train_loss", "lr"):  # lr: the rate of the epoch's last step, not the next one's
        assert [r[key] for r in a] == [r[key] for r in b], key


def test_a_run_continued_with_other_steps_an_epoch_starts_the_epoch_again_and_says_so(synth_data, tmp_path):
    """Another number of ranks makes a step stand for other clips: a mid-epoch position cannot carry over."""
    from vidclf import distributed
    from vidclf.run import build_run

    cut = fit(_cfg(synth_data, tmp_path), console=quiet, show_progress=False, stop=StopAfterReads(5))
    saved = torch.load(cut.run_dir / "last.pt", weights_only=True)
    assert (saved["epoch"], saved["step"], saved["epoch_steps"], saved["world"]) == (1, 1, 4, 1)
    said = []
    run = build_run(_cfg(synth_data, tmp_path), device=torch.device("cpu"), rank=distributed.Rank(), say=said.append,
                    resume_from={**saved, "epoch_steps": 2, "world": 2}, run_dir=cut.run_dir)
    assert (run.state.epoch, run.state.step, run.state.partial) == (1, 0, None)
    assert run.scheduler.last_epoch == 4  # the start of epoch 2 in this run's steps
    assert any("took 2 steps an epoch (2 processes) and now takes 4: epoch 2 starts again" in line for line in said)
