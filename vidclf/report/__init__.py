"""`vidclf evaluate --report DIR`: a folder a browser opens from disk, to see *which* videos a model gets
wrong and what it saw of them, not only how many.

Two steps, because of torchrun: `select` runs on every rank while the ranks are together (the
gallery is chosen from every video's probabilities; `--neighbours` embeds the training videos, each
rank its share); `write` runs on rank 0 alone and decodes again only the few videos it shows, through
evaluation's own loader, so a filmstrip is the clip the model was fed. `gallery.py` chooses and
decodes, `images.py` draws, `page.py` lays the page out.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from vidclf.checkpoint import Classifier
from vidclf.data.decoder import Decoder
from vidclf.data.files import Sample
from vidclf.errors import WriteError
from vidclf.data.labels import multi_hot
from vidclf.report.gallery import Neighbour, Pick, clips_seen, nearest_training, pick, pick_mistakes
from vidclf.report.page import Card, Gallery, render

TOP_K_SHOWN = 3
NEIGHBOURS = 3
MIN_SHOWN_PX = 64  # frames smaller than this are shown enlarged by a whole factor, sharp (pixelated)


@dataclass
class Selection:
    """What the galleries show, decided on every rank from the whole evaluation."""

    probabilities: torch.Tensor  # float (N, classes): row i the dataset's video i, NaN if unreadable
    errors: Pick  # multi-label: the false positives
    unsure: Pick  # correct videos, least confident first; multi-label: the false negatives
    neighbours: dict[str, list[Neighbour]]  # path → nearest training videos, with --neighbours


@dataclass
class Evaluated:
    """What was evaluated and how: the page says it, and the filmstrips are decoded the same way."""

    samples: list[Sample]
    source: str
    split: str
    views: tuple[int, int]  # (clips, crops)


def select(clf: Classifier, evaluated: Evaluated, probabilities: torch.Tensor, *, limit: int,
           training: list[Sample] | None = None, device: torch.device, dtype: torch.dtype | None = None,
           decoder: Decoder | None = None, batch_size: int = 16, workers: int | None = None,
           progress: Callable[[int], None] | None = None) -> Selection:
    """The errors and unsure videos to show (`limit` of each), and with `training` their nearest
    training videos. Call it on every rank: under torchrun the embedding is shared out."""
    if clf.multi_label:
        targets = torch.tensor([multi_hot(s.label, len(clf.classes)) for s in evaluated.samples]).view(-1, len(clf.classes))
        errors, unsure = pick_mistakes(probabilities, targets, clf.thresholds, limit=limit)
    else:
        labels = torch.tensor([s.label for s in evaluated.samples], dtype=torch.long)
        errors, unsure = pick(probabilities, labels, limit=limit)
    near = {}
    if training is not None:
        queries = [evaluated.samples[i].path for i in errors.shown + unsure.shown]
        near = nearest_training(clf, queries, training, k=NEIGHBOURS, device=device, dtype=dtype,
                                views=evaluated.views, decoder=decoder, batch_size=batch_size, workers=workers,
                                progress=progress)
    return Selection(probabilities, errors, unsure, near)


def write(folder: Path, selection: Selection, *, clf: Classifier, checkpoint: dict, evaluated: Evaluated,
          evaluation: dict, animate: bool = False, decoder: Decoder | None = None, batch_size: int = 16,
          workers: int = 0) -> Path:
    """Write folder/index.html and its pictures; returns the page's path. index.html comes last and
    whole (renamed into place), so a folder with one is a finished report."""
    try:
        return _write(folder, selection, clf=clf, checkpoint=checkpoint, evaluated=evaluated, evaluation=evaluation,
                      animate=animate, decoder=decoder, batch_size=batch_size, workers=workers)
    except OSError as err:  # a full disk, say: one line, not a traceback
        raise WriteError(folder, err) from err


def make_folder(folder: Path) -> None:
    """Made before the evaluation, so that a folder that cannot be written fails at once, not after it."""
    try:
        (folder / "frames").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WriteError(folder, err) from err


def _write(folder: Path, selection: Selection, *, clf: Classifier, checkpoint: dict, evaluated: Evaluated,
           evaluation: dict, animate: bool, decoder: Decoder | None, batch_size: int, workers: int) -> Path:
    from vidclf.plots import save_confusion

    make_folder(folder)
    images = {} if clf.multi_label else {
        "confusion": save_confusion(evaluation["confusion_matrix"], clf.classes, folder / "confusion.png").name}
    images |= _training_curves(clf.path.parent, checkpoint, folder)
    cards = _cards(folder, selection, clf=clf, evaluated=evaluated, animate=animate, decoder=decoder,
                   batch_size=batch_size, workers=workers)
    (first, first_title, first_note), (second, second_title, second_note) = _gallery_kinds(clf.multi_label)
    galleries = [
        Gallery(first, first_title, first_note, [cards[i] for i in selection.errors.shown], selection.errors.total),
        Gallery(second, second_title, second_note, [cards[i] for i in selection.unsure.shown], selection.unsure.total),
    ]
    per_class = ([{**row, "class": row["label"]} for row in evaluation["per_label"]] if clf.multi_label
                 else evaluation["per_class"])
    page = render(title=f"vidclf evaluation: {clf.path.parent.name}/{clf.path.name} on {evaluated.split}",
                  settings=_settings(clf, checkpoint, evaluated), metrics=_metrics(evaluation),
                  failed=evaluation["failed"], images=images, per_class=per_class,
                  confusion=evaluation.get("confusion_matrix"), classes=clf.classes, galleries=galleries)
    index = folder / "index.html"
    tmp = folder / f".index.html.{os.getpid()}.tmp"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, index)
    return index


def _gallery_kinds(multi_label: bool) -> list[tuple[str, str, str]]:
    """(anchor, title, note) of the two galleries."""
    if multi_label:
        return [("false-positives", "False positives", "Videos given a label they do not have, the highest such "
                 "score first: a confident one is often a missing label in the data."),
                ("false-negatives", "False negatives", "Videos denied a label they have, the lowest such score "
                 "first: a label the model does not see in them.")]
    return [("errors", "Errors", "Misclassified videos, the most confident mistakes first: a confident mistake "
             "is often a mislabelled or unusual clip."),
            ("unsure", "Least confident correct", "Correct videos the model was least sure of: the next to fail.")]


def _view_names(views: tuple[int, int]) -> list[str]:
    """What each view of `views.load_views` is, in its order: the centre clip, then each spread clip's crops."""
    clips, crops = views
    if views == (1, 1):
        return ["centre clip"]
    return ["centre clip"] + [", ".join(([f"clip {c + 1}/{clips}"] if clips > 1 else [])
                                        + ([f"crop {j + 1}/{crops}"] if crops > 1 else []))
                              for c in range(clips) for j in range(crops)]


def _cards(folder: Path, selection: Selection, *, clf: Classifier, evaluated: Evaluated, animate: bool,
           decoder: Decoder | None, batch_size: int, workers: int) -> dict[int, Card]:
    """A card per shown video, its filmstrips (and animation) written under folder/frames."""
    from vidclf.report.images import animation_suffix, save_animation, save_filmstrip

    samples, classes, pre = evaluated.samples, clf.classes, clf.preprocess
    names = _view_names(evaluated.views)
    shown_px = pre.size * max(1, -(-MIN_SHOWN_PX // pre.size))
    cards = {}
    for index, seen in clips_seen(clf, samples, selection.errors.shown + selection.unsure.shown,
                                  views=evaluated.views, decoder=decoder, batch_size=batch_size, workers=workers):
        path, label = samples[index]
        probs = selection.probabilities[index]
        scores, top = probs.topk(len(classes) if clf.multi_label else min(TOP_K_SHOWN, len(classes)))
        topk = [(classes[i], float(s)) for s, i in zip(scores, top.tolist())]
        neighbours = [(n.path, _names(n.label, classes), n.similarity) for n in selection.neighbours.get(path, [])]
        if clf.multi_label:
            predicted = [c for (c, p), t in zip(zip(classes, probs.tolist()), clf.thresholds) if p >= t]
            card = Card(path, _names(label, classes), 0.0, topk, frame_size=shown_px, neighbours=neighbours,
                        labels=([classes[i] for i in label], predicted))
        else:
            card = Card(path, classes[label], float(probs[label]), topk, frame_size=shown_px, neighbours=neighbours)
        if isinstance(seen, str):
            card.error = seen
        else:
            card.frames = seen.shape[1]
            for v, (name, frames) in enumerate(zip(names, seen)):
                card.strips.append((name, save_filmstrip(frames, folder / "frames" / f"{index}-{v}.jpg")
                                    .relative_to(folder).as_posix()))
            if animate:
                ms = _frame_ms(path, pre.frame_stride, decoder)
                card.animation = save_animation(seen[0], folder / "frames" / f"{index}{animation_suffix()}",
                                                frame_ms=ms).relative_to(folder).as_posix()
        cards[index] = card
    return cards


def _names(label: int | tuple[int, ...], classes: list[str]) -> str:
    """A sample's class, or its labels (`;`-separated, as in a manifest)."""
    return ";".join(classes[i] for i in label) if isinstance(label, tuple) else classes[label]


def _frame_ms(path: str, stride: int, decoder: Decoder | None) -> int:
    """Milliseconds per frame of a clip taken every `stride` frames, so it plays at the video's own pace."""
    from vidclf.data import video

    try:
        fps = (decoder or Decoder(None)).call(video.probe, path).fps
    except video.VideoError:
        fps = 0.0
    return round(1000 * stride / (fps if fps > 0 else 25.0))


def _training_curves(run: Path, checkpoint: dict, folder: Path) -> dict[str, str]:
    """curves.png and metrics.csv copied from the checkpoint's run folder; without them, curves drawn
    from the history the checkpoint holds (up to its own epoch); none for a checkpoint without one."""
    from vidclf.plots import save_curves

    found = {}
    for key, name in (("curves", "curves.png"), ("metrics_csv", "metrics.csv")):
        if (run / name).is_file():
            shutil.copyfile(run / name, folder / name)
            found[key] = name
    if "curves" not in found and checkpoint.get("history"):
        found["curves"] = save_curves(checkpoint["history"], folder / "curves.png").name
    return found


def _settings(clf: Classifier, checkpoint: dict, evaluated: Evaluated) -> list[tuple[str, str]]:
    spec, pre, trained = checkpoint["model"], clf.preprocess, checkpoint.get("train_config", {})
    clips, crops = evaluated.views
    epochs = str(checkpoint.get("epoch", "?")) + (f" of {trained['epochs']}" if "epochs" in trained else "")
    return [
        ("checkpoint", str(clf.path)),
        ("written by", f"vidclf {checkpoint.get('vidclf_version', '?')}, trained {epochs} epochs"
                       + (f" on {trained['data']}" if "data" in trained else "")),
        ("architecture", spec["name"] + " " + " ".join(f"{k}={v}" for k, v in spec.get("config", {}).items())),
        ("preprocessing", f"{pre.num_frames} frames every {pre.frame_stride}, {pre.size}×{pre.size} "
                          f"({pre.interpolation}), input {pre.input}, {pre.sampling} clip"),
        ("classes", f"{len(clf.classes)}: " + ", ".join(clf.classes)),
        ("evaluated", f"{evaluated.source}, split {evaluated.split}, {len(evaluated.samples)} videos"),
        ("views", f"{clips} clip{'s' if clips != 1 else ''} × {crops} crop{'s' if crops != 1 else ''} "
                  f"(accuracy: their mean; clip accuracy: the centre clip)"),
        ("report written", time.strftime("%Y-%m-%d %H:%M:%S")),
    ]


def _metrics(evaluation: dict) -> list[tuple[str, str]]:
    if evaluation.get("multi_label"):
        return [
            ("mAP", "-" if evaluation["map"] is None else f"{evaluation['map']:.3f}"),
            ("exact label sets", f"{evaluation['exact_set']:.3f}"),
            ("centre clip exact sets", f"{evaluation['clip_exact_set']:.3f}"),
            ("F1 per video", f"{evaluation['samples']['f1']:.3f}"),
            ("videos scored", f"{evaluation['num_clips']}"),
            ("unreadable", f"{len(evaluation['failed'])}"),
        ]
    (k, top_k), = evaluation["top_k_accuracy"].items()
    return [
        ("accuracy", f"{evaluation['accuracy']:.3f}"),
        ("clip accuracy", f"{evaluation['clip_accuracy']:.3f}"),
        (f"top-{k} accuracy", f"{top_k:.3f}"),
        ("mean class accuracy", f"{evaluation['mean_class_accuracy']:.3f}"),
        ("videos scored", f"{evaluation['num_clips']}"),
        ("unreadable", f"{len(evaluation['failed'])}"),
    ]
