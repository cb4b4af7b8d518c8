"""The fit loop: epochs of training and validation, safe checkpoints, early stopping, resume.

`run.py` builds the run; here it is stepped, one named piece at a time: a training step, an epoch,
validation, the epoch's row, and the checkpoint/early-stop decision. Every random draw of a step
(data order, clip sampling, augmentation, dropout) is seeded from (seed, epoch, step), so a run
interrupted and resumed from `last.pt` ends exactly where an uninterrupted run with the same seed does.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.markup import escape

from vidclf import checkpoint, distributed, online, start
from vidclf.boardlog import BoardLog
from vidclf.data.datasets import Batch
from vidclf.device import autocast, resolve_device
from vidclf.errors import DatasetError
from vidclf.evaluate import compute_metrics, iter_logits
from vidclf.mixing import Mixed, mix_clips
from vidclf.multilabel import DEFAULT_THRESHOLD, choose_thresholds, exact_sets, multilabel_metrics
from vidclf.preprocess import channels_first, step_seed, to_model_input
from vidclf.resume import resume_state
from vidclf.run import Run, TrainConfig, build_run
from vidclf.stopping import Agreement, StopSignal
from vidclf.trainlog import EpochLog, epoch_progress


REFRESH = 0.5  # seconds between reads of the running loss for the progress bar


@dataclass
class RunResult:
    run_dir: Path
    best: Path | None
    history: list[dict]
    interrupted: bool
    model: torch.nn.Module  # the trained model (this process's replica under DDP)
    steps: int  # optimizer steps taken by this process in this call


def fit(cfg: TrainConfig, *, console: Console, show_progress: bool = True, stop: StopSignal | None = None,
        resume: str | Path | None = None, run_dir: str | Path | None = None,
        continue_with: str | None = None) -> RunResult:
    """Train `cfg.arch` on `cfg.data` in `run_dir` (default: a new folder under `cfg.out`); with
    `resume` (a last.pt) continue that run in its folder. `continue_with` is the command an
    interrupted run tells the user to continue with (default: `vidclf train --resume LAST`)."""
    saved = resume_state(resume) if resume else None
    device = resolve_device(cfg.device)
    rank = distributed.setup(device.type)
    try:
        device = distributed.rank_device(device, rank)
        torch.backends.cudnn.benchmark = device.type == "cuda"
        say = console.print if rank.is_main else _silent
        folder = Path(run_dir) if run_dir else Path(resume).parent if resume else None
        run = build_run(cfg, device=device, rank=rank, say=say, resume_from=saved, run_dir=folder)
        trainer = Trainer(run, console=console, show_progress=show_progress, stop=stop or StopSignal(),
                          continue_with=continue_with)
        return trainer.fit()
    finally:
        distributed.teardown()


def _silent(*args, **kwargs) -> None:
    pass


SUMS = ("loss", "correct", "count", "wait", "seconds")


def _zero_sums() -> dict:
    return dict.fromkeys(SUMS, 0.0)


def _with_device(sums: dict, on_device: torch.Tensor) -> tuple[float, float]:
    """The running loss × clips and correct count: what was read back, plus what is still on the device."""
    loss, correct = on_device.tolist()
    return sums["loss"] + loss, sums["correct"] + correct


@dataclass
class EpochSteps:
    """Where an epoch's training steps ended."""

    sums: dict  # this rank's running sums (loss × clips, correct, clips, seconds waiting and in all)
    step: int  # the steps taken, counted from the epoch's start
    steps: int  # the steps an epoch has
    stopped: bool  # the ranks agreed to stop after `step`


class Trainer:
    """Steps a built `Run`: each piece below is one decision of the loop."""

    def __init__(self, run: Run, *, console: Console, show_progress: bool, stop: StopSignal,
                 continue_with: str | None = None):
        self.run, self.console, self.show_progress = run, console, show_progress
        main = run.rank.is_main
        self.agreement = Agreement(stop, save_every=run.cfg.save_every * 60, is_main=main)
        self.continue_with = continue_with or f"vidclf train --resume {run.run_dir / 'last.pt'}"
        self.say = console.print if main else _silent
        self.log = EpochLog(console if main else Console(quiet=True), run.run_dir if main else None,
                            multi_label=run.multi_label)
        self.reported: set[str] = set()
        self.best_path = run.run_dir / "best.pt" if (run.run_dir / "best.pt").exists() else None
        self.stale = 0  # epochs since the monitored metric last improved
        self.steps = 0  # optimizer steps taken in this call
        self.lr = run.optimizer.param_groups[0]["lr"] if run.state.lr is None else run.state.lr  # of the last step taken
        self.confusion: torch.Tensor | None = None  # of the last validation
        # multi-label: per label, chosen by the last validation (a continued run's, until it validates)
        self.thresholds = run.state.thresholds or [DEFAULT_THRESHOLD] * len(run.classes)
        self.epoch_steps = len(run.train_loader)  # before any resume skips some
        first = run.state.epoch * self.epoch_steps + run.state.step
        self.board = BoardLog(run.run_dir, first_step=first) if run.cfg.tensorboard and main else None

    def fit(self) -> RunResult:
        run, cfg = self.run, self.run.cfg
        kind = "labels (multi-label)" if run.multi_label else "classes"
        self.say(f"[bold]vidclf train[/] {cfg.arch} on {cfg.data}: {len(run.classes)} {kind}, "
                 f"{len(run.train_set)} train / {len(run.val_loader.dataset) if run.val_loader else 0} val clips, "
                 f"{run.device}, {'fp32' if run.dtype is None else str(run.dtype).removeprefix('torch.')}, "
                 f"run folder {run.run_dir}")
        if run.state.epoch >= cfg.epochs:
            self.say(f"the run has already trained its {cfg.epochs} epochs (a larger --epochs goes on)")
        try:
            interrupted = self.epochs()
        finally:
            if self.board is not None:
                self.board.close()
        if not interrupted and self.best_path is not None:
            self.say(f"[bold green]best checkpoint[/] {self.best_path} ({self._monitor()} {run.state.best:.4f})")
        return RunResult(run.run_dir, self.best_path, run.state.history, interrupted, run.model, self.steps)

    def epochs(self) -> bool:
        """The epochs left; True when a signal stopped them."""
        run, cfg = self.run, self.run.cfg
        for epoch in range(run.state.epoch, cfg.epochs):
            done = self.train_epoch(epoch)
            if done.stopped:  # straight away, even before validating: a scheduler's grace period is short
                last = self.save("last.pt", epoch=epoch, step=done.step, partial=self.totals(done.sums))
                self.agreement.together()  # torchrun kills the others once one exits: not while rank 0 writes
                self.say(f"[yellow]interrupted[/] in epoch {epoch + 1} after step {done.step}/{done.steps}; "
                         f"saved {last}; continue with: {self.continue_with}")
                return True
            row = self.epoch_row(epoch, done.sums)
            if self.checkpoint(row):
                break
            if epoch + 1 < cfg.epochs and self.agreement.stop_now():  # (after the last epoch: done)
                self.say(f"[yellow]interrupted[/] after epoch {epoch + 1}; continue with: {self.continue_with}")
                return True
        if self.board is not None and self.confusion is not None:
            self.board.confusion(self.confusion, run.classes, step=len(run.state.history) * self.epoch_steps - 1)
        return False

    def train_epoch(self, epoch: int) -> EpochSteps:
        """One epoch's steps, from mid-epoch when resuming, until its end or until the ranks agree to stop.

        The loss and correct counts stay on the device and are read back only when the bar is
        redrawn, for a mid-epoch save and at the end: a read every step would make the CPU wait for
        the GPU each step, so it could never queue the next step's work ahead.
        """
        run, state = self.run, self.run.state
        skip = state.step if epoch == state.epoch else 0
        run.train_sampler.set_epoch(epoch, skip=skip * run.cfg.batch_size)
        resumed = state.partial and epoch == state.epoch and run.rank.is_main  # saved summed over the ranks
        sums = state.partial if resumed else _zero_sums()
        state.partial = None
        on_device = torch.zeros(2, dtype=torch.float64, device=run.device)  # loss × clips, correct
        run.net.train()
        steps, step, decision = len(run.train_loader) + skip, skip, None
        with epoch_progress(self.console, epoch, run.cfg.epochs, enabled=self.show_progress and run.rank.is_main) as bar:
            task = bar.add_task("train", total=steps, completed=skip, loss=0.0, acc=0.0, rate=0.0)
            tick = shown = time.perf_counter()
            for batch in run.train_loader:
                got = time.perf_counter()
                totals, n = self.train_step(batch, epoch, step)
                if self.board is not None:
                    self.board.step(epoch * self.epoch_steps + step, totals[0] / n, self.lr)
                on_device += totals
                step += 1
                done = time.perf_counter()
                for key, value in (("count", n), ("wait", got - tick), ("seconds", done - tick)):
                    sums[key] += value
                tick = done
                bar.advance(task)
                if not bar.disable and done - shown >= REFRESH:
                    loss, correct = _with_device(sums, on_device)
                    count = max(sums["count"], 1)
                    bar.update(task, loss=loss / count, acc=correct / count, rate=count / max(sums["seconds"], 1e-9))
                    shown = done
                decision = self.agreement.after_step()
                if decision.stop:
                    break
                if decision.save:
                    loss, correct = _with_device(sums, on_device)
                    self.save("last.pt", epoch=epoch, step=step, partial=self.totals({**sums, "loss": loss, "correct": correct}))
            else:
                decision = self.agreement.epoch_end()
        sums["loss"], sums["correct"] = _with_device(sums, on_device)
        sums["seconds"] += time.perf_counter() - tick  # the device finishing what was queued
        return EpochSteps(sums, step, steps, stopped=decision is not None and decision.stop)

    def train_step(self, batch: Batch, epoch: int, step: int) -> tuple[torch.Tensor, int]:
        """Forward, backward and update on one batch; returns (loss × clips, correct) on the device, and the clips."""
        run = self.run
        self.report(batch)
        if not len(batch.lengths):  # the dataset replaces bad videos until none is left
            raise DatasetError(f"{run.cfg.data}: no readable training video left: all {len(run.train_set)} "
                               f"failed (the first: {batch.failures[0].reason})")
        seed = step_seed(run.cfg.seed, epoch, step)
        torch.manual_seed(seed)  # dropout draws, replayable on resume
        gen = torch.Generator(device=run.device).manual_seed(seed)
        clips, lengths, labels = (t.to(run.device, non_blocking=True) for t in (batch.clips, batch.lengths, batch.labels))
        run.optimizer.zero_grad(set_to_none=True)
        if run.cfg.online:
            loss, accuracy = self.sequences_backward(clips, lengths, labels, gen)
            correct = accuracy * len(labels)  # counted as clips: train_acc is the per-frame accuracy
        else:
            loss, correct = self.clips_backward(clips, lengths, labels, gen)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        self.lr = run.optimizer.param_groups[0]["lr"]  # the rate this step used
        with warnings.catch_warnings():  # fp16: a step the scaler skipped still counts in the schedule
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step()` before")
            run.scheduler.step()
        self.steps += 1
        n = len(labels)
        return torch.stack([loss.detach().double() * n, correct.double()]), n

    def clips_backward(self, clips: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor,
                       gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward on a batch of clips; returns (loss, clips right: the label, or the exact label set)."""
        run = self.run
        x = to_model_input(channels_first(clips), lengths, run.pre, generator=gen, hflip=run.cfg.hflip)
        if run.cfg.compile:
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's graph outputs are done
        mixed = None
        if run.cfg.mix != "none":
            mixed = mix_clips(x, labels, lengths, kind=run.cfg.mix, alpha=run.cfg.mix_alpha, generator=gen)
            x, lengths = mixed.x, mixed.lengths
        with autocast(run.device, run.dtype):
            logits = run.net(x, lengths)
            loss = self.loss(logits.float(), labels, mixed)
        run.scaler.scale(loss).backward()
        correct = exact_sets(logits.detach(), labels) if run.multi_label else (logits.detach().argmax(1) == labels).sum()
        return loss, correct

    def sequences_backward(self, clips: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor,
                           gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """--online: the batch's clips joined into streams, a label per frame, truncated backpropagation
        (online.py); returns (mean loss per frame, per-frame accuracy)."""
        run, cfg = self.run, self.run.cfg
        seqs = online.join_clips(clips, lengths, labels, run.pre, per_sequence=cfg.sequence_clips, grace=cfg.grace,
                                 generator=gen, hflip=cfg.hflip)
        return online.backward_sequences(run.model, seqs, chunk=cfg.chunk, backward=lambda loss: run.scaler.scale(loss).backward(),
                                         device=run.device, dtype=run.dtype, weight=run.loss_weights,
                                         label_smoothing=cfg.label_smoothing)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, mixed: Mixed | None = None) -> torch.Tensor:
        """The training loss (`Run.criterion`: cross-entropy, or multi-label BCE); for mixed clips, the mix of
        the losses against both clips' labels by the clips' shares (for BCE, the loss of the mixed label rows)."""
        loss = self.run.criterion(logits, labels)
        if mixed is None:
            return loss
        return mixed.weight * loss + (1 - mixed.weight) * self.run.criterion(logits, mixed.partner_labels)

    def validate(self) -> dict:
        """Loss, accuracy and mean per-class accuracy over the validation split, each clip counted once
        across ranks (all None without validation clips), and the clips counted; the confusion matrix
        (rows: true class) is kept in `self.confusion`."""
        run = self.run
        if run.val_loader is None:
            return {"val_loss": None, "val_acc": None, "val_class_acc": None, "val_map": None, "val_clips": 0}
        if run.multi_label:
            return self.validate_multilabel()
        # Validate the bare model. Under DDP, shards may differ by a batch, and DDP's forward would
        # broadcast buffers, a collective the rank with fewer batches never joins. Compiled with CUDA
        # graphs, inference graphs recorded beside the training ones crashed or hung the process
        # (torch 2.11, H100; pytorch/pytorch#128218).
        classes = len(run.classes)
        loss, confusion = 0.0, torch.zeros(classes * classes, dtype=torch.float64)
        for batch, logits in iter_logits(run.model, run.val_loader, run.pre, run.device, run.dtype):
            self.report(batch)
            if len(logits):
                loss += float(F.cross_entropy(logits, batch.labels, reduction="sum"))
                cells = batch.labels.cpu() * classes + logits.argmax(1).cpu()
                confusion += torch.bincount(cells, minlength=classes * classes)
        totals = distributed.all_sum([loss, *confusion.tolist()], run.device)
        loss, self.confusion = totals[0], torch.tensor(totals[1:], dtype=torch.float64).view(classes, classes)
        clips = int(self.confusion.sum())
        if not clips:
            return {"val_loss": None, "val_acc": None, "val_class_acc": None, "val_map": None, "val_clips": 0}
        metrics = compute_metrics(self.confusion, top_k_correct=0, classes=run.classes, k=1)  # as evaluate reports them
        return {"val_loss": loss / clips, "val_acc": metrics["accuracy"], "val_class_acc": metrics["mean_class_accuracy"],
                "val_map": None, "val_clips": clips}

    def validate_multilabel(self) -> dict:
        """Multi-label validation: every rank's probabilities gathered (AP ranks all clips at once), each
        label's threshold chosen on them (kept in `self.thresholds` for the checkpoint), then the loss,
        the share of exactly right label sets at those thresholds (val_acc) and mAP (val_map)."""
        run = self.run
        loss, parts = 0.0, []
        for batch, logits in iter_logits(run.model, run.val_loader, run.pre, run.device, run.dtype):
            self.report(batch)
            if len(logits):
                loss += float(F.binary_cross_entropy_with_logits(logits, batch.labels.float(), reduction="sum"))
                parts.append((logits.sigmoid(), batch.labels))
        loss = distributed.all_sum([loss], run.device)[0]
        parts = [part for rank_parts in distributed.gather(parts) for part in rank_parts]
        if not parts:
            return {"val_loss": None, "val_acc": None, "val_class_acc": None, "val_map": None, "val_clips": 0}
        probs, targets = torch.cat([p for p, _ in parts]), torch.cat([t for _, t in parts])
        self.thresholds = choose_thresholds(probs, targets)
        metrics = multilabel_metrics(probs, targets, self.thresholds, run.classes)
        return {"val_loss": loss / targets.numel(), "val_acc": metrics["exact_set"], "val_class_acc": None,
                "val_map": metrics["map"], "val_clips": len(targets)}

    def epoch_row(self, epoch: int, sums: dict) -> dict:
        """Validate, then the epoch's metrics over all ranks: logged, drawn, and kept in the history."""
        run = self.run
        loss, correct, count, wait, seconds = distributed.all_sum([sums[k] for k in SUMS], run.device)
        val_start = time.perf_counter()
        val = self.validate()
        seconds /= run.rank.world
        row = {
            "epoch": epoch + 1, "train_loss": loss / max(count, 1), "train_acc": correct / max(count, 1),
            "val_loss": val["val_loss"], "val_acc": val["val_acc"], "val_class_acc": val["val_class_acc"],
            "val_map": val["val_map"], "lr": self.lr,
            "seconds": seconds + time.perf_counter() - val_start, "clips_per_s": count / max(seconds, 1e-9),
            "data_wait": wait / max(seconds * run.rank.world, 1e-9), "train_clips": int(count), "val_clips": val["val_clips"],
        }
        run.state.history.append(row)
        self.log.add(row, run.state.history)
        if self.board is not None:
            self.board.epoch(row, step=(epoch + 1) * self.epoch_steps - 1)
        if epoch == 0 and run.cache is not None and run.rank.is_main:
            self.say(run.cache.summary())
        return row

    def checkpoint(self, row: dict) -> bool:
        """best.pt when the monitored metric improved, last.pt always; True when patience ran out."""
        state, patience, monitor = self.run.state, self.run.cfg.patience, self._monitor()
        value = row[monitor]
        improved = value is not None and (state.best is None or
                                          (value < state.best if monitor.endswith("loss") else value > state.best))
        if improved:
            state.best, self.stale = value, 0
            self.best_path = self.save("best.pt", epoch=row["epoch"], step=0)
        else:
            self.stale += 1
        self.save("last.pt", epoch=row["epoch"], step=0)
        if patience is not None and self.stale >= patience:
            self.say(f"early stop: {monitor} did not improve for {patience} epochs")
            return True
        return False

    def save(self, name: str, *, epoch: int, step: int, partial: dict | None = None) -> Path:
        """Write a checkpoint on the main rank: everything predict needs, and everything resume needs."""
        run, path = self.run, self.run.run_dir / name
        if run.rank.is_main:
            checkpoint.save({
                "model": {"name": run.cfg.arch, "num_classes": len(run.classes), "config": asdict(run.model.config)},
                "classes": run.classes, "preprocess": asdict(run.pre), "train_config": asdict(run.cfg),
                "start": start.record(run.cfg),
                "state_dict": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
                "scheduler": run.scheduler.state_dict(),
                "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None,
                "epoch": epoch, "step": step, "best_metric": run.state.best, "history": run.state.history,
                "partial": partial, "lr": self.lr, "epoch_steps": self.epoch_steps, "world": run.rank.world,
                "precision": str(run.dtype or torch.float32).removeprefix("torch."),
                "multi_label": run.multi_label, **({"thresholds": self.thresholds} if run.multi_label else {}),
            }, path)
        if name == "last.pt":
            self.agreement.saved()
        return path

    def totals(self, sums: dict) -> dict:
        """An unfinished epoch's running sums over all ranks: what last.pt keeps (resume gives them to rank 0)."""
        return dict(zip(SUMS, distributed.all_sum([sums[k] for k in SUMS], self.run.device)))

    def report(self, batch: Batch) -> None:
        """Each unreadable file and each warning once, on every rank's stderr."""
        for key, text in [(f.path, f"[yellow]skipped[/] {escape(f.reason)}") for f in batch.failures] + \
                         [(w, f"[yellow]warning[/] {escape(w)}") for w in batch.warnings]:
            if key not in self.reported:
                self.reported.add(key)
                self.console.print(text, highlight=False)

    def _monitor(self) -> str:
        return self.run.cfg.monitor if self.run.val_loader is not None else "train_loss"

