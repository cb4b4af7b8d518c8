"""Labels for every frame of a long video (`predict --timeline`), as segments of one label each.

Every frame is labelled as `stream` would label it live (vidclf/stream.py): a checkpoint trained for
streams (`train --online`) by one recurrent step per frame, its state carried from the first frame;
any other by the clip span that ends at that frame (so its timeline starts once a span has played).
Consecutive frames with the same top label make a segment: {start, end, label, score}, times in
seconds, `end` the start of the next segment (the last ends one frame after its last frame), and
`score` the label's mean probability over the segment's frames. Causal by construction: a label
never depends on a later frame, so a timeline is what a live stream of the file would have said.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from vidclf.checkpoint import Classifier
from vidclf.data.video import VideoError
from vidclf.errors import DatasetError
from vidclf.predict import topk_record
from vidclf.stream import DEFAULT_FPS, frames, stepwise_default, stream_probs


def segments(times: list[float], probs: torch.Tensor, classes: list[str], *, interval: float,
             min_frames: int = 1) -> list[dict]:
    """Runs of the same top label among frames at `times` with probabilities `probs` (N, classes).

    With `min_frames` > 1, a run shorter than that (a label that flickers for a frame or two) keeps
    the label of the run before it, as a live system that waits `min_frames` frames before it switches
    would say, the switch dated back to where the new label began.
    """
    top = probs.argmax(dim=1).tolist()
    runs = _runs(top)
    for k in range(1, len(runs)):
        start, end = runs[k]
        if end - start < min_frames:
            top[start:end] = [top[start - 1]] * (end - start)
    out: list[dict] = []
    for start, end in _runs(top):
        score = float(probs[start:end, top[start]].mean())
        stop = times[end] if end < len(top) else times[-1] + interval
        out.append({"start": round(times[start], 3), "end": round(stop, 3), "label": classes[top[start]],
                    "score": round(score, 6)})
    return out


def _runs(labels: list[int]) -> list[tuple[int, int]]:
    """(start, end) of each run of equal labels, end exclusive."""
    bounds = [0] + [i for i in range(1, len(labels)) if labels[i] != labels[i - 1]] + [len(labels)]
    return list(zip(bounds, bounds[1:]))


def timeline_record(path: str, clf: Classifier, *, device: torch.device, dtype: torch.dtype | None = None,
                    top_k: int = 5, min_segment_s: float = 0.0) -> dict:
    """{path, label, score, topk, error, timeline}: the video's scores are the mean over its labelled frames."""
    try:
        labelled = list(stream_probs(clf, frames(path, clf.preprocess.size), device=device, hop_frames=1, dtype=dtype))
    except VideoError as err:
        return {**topk_record(path, None, clf.classes, top_k, error=str(err)), "timeline": []}
    if not labelled:
        error = f"{path}: shorter than the model's clip span ({first_labelled(clf) + 1} frames): no frame can be labelled"
        return {**topk_record(path, None, clf.classes, top_k, error=error), "timeline": []}
    times = [t for t, _ in labelled]
    probs = torch.stack([p for _, p in labelled])  # (N, classes)
    interval = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else 1 / DEFAULT_FPS
    return {**topk_record(path, probs.mean(dim=0), clf.classes, top_k),
            "timeline": segments(times, probs, clf.classes, interval=interval,
                                 min_frames=max(1, round(min_segment_s / interval)) if interval > 0 else 1)}


def timeline_records(paths: list[str], clf: Classifier, *, device: torch.device, dtype: torch.dtype | None = None,
                     top_k: int = 5, min_segment_s: float = 0.0) -> Iterator[dict]:
    """One `timeline_record` per path, in order."""
    for path in paths:
        yield timeline_record(path, clf, device=device, dtype=dtype, top_k=top_k, min_segment_s=min_segment_s)


AFTER_CHANGE = 16  # frames after a change of label at which "following" it is scored


def labels_path(video: str | Path) -> Path:
    """Where a video's per-frame labels are: NAME.labels.csv beside NAME.mp4."""
    return Path(video).with_suffix(".labels.csv")


def read_frame_labels(path: str | Path) -> list[str]:
    """The labels of a `frame,label` CSV, frame 0 first; a file that is not one raises DatasetError."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        return [row["label"] for row in sorted(rows, key=lambda r: int(r["frame"]))]
    except (OSError, KeyError, TypeError, ValueError) as err:
        raise DatasetError(f"{path}: not a frame,label CSV ({type(err).__name__}: {err})") from None


def follow_metrics(truth: np.ndarray, top: np.ndarray, *, after: int = 0) -> dict:
    """How `top` (the class of every frame, -1 where none) follows `truth` (the true class of every frame),
    from frame `after` on: the accuracy over all frames; at exactly AFTER_CHANGE frames after each
    change of label; over the frames from AFTER_CHANGE after a change to the next ("settled"); and the
    median frames from a change to the first right label ("follow"; a segment never followed counts
    its length)."""
    right = top == truth
    changes = [t for t in range(max(after, 1), len(truth)) if truth[t] != truth[t - 1]]
    ends = changes[1:] + [len(truth)]
    settled = [right[c + AFTER_CHANGE : e] for c, e in zip(changes, ends)]
    lags = [int(np.flatnonzero(right[c:e])[0]) if right[c:e].any() else e - c for c, e in zip(changes, ends)]
    at = [right[c + AFTER_CHANGE] for c, e in zip(changes, ends) if c + AFTER_CHANGE < e]
    return {"frames": len(truth) - after, "changes": len(changes), "accuracy": float(right[after:].mean()),
            "after_change": float(np.mean(at)) if at else None,
            "settled": float(np.concatenate(settled).mean()) if settled and sum(map(len, settled)) else None,
            "follow_frames": float(np.median(lags)) if lags else None}


def first_labelled(clf: Classifier) -> int:
    """The first frame a timeline labels: 0 stepping, else the last frame of the first clip span."""
    pre = clf.preprocess
    return 0 if stepwise_default(clf) else (pre.num_frames - 1) * pre.frame_stride


def evaluate_timeline(path: str, clf: Classifier, *, device: torch.device, dtype: torch.dtype | None = None) -> dict:
    """`follow_metrics` of one video against its NAME.labels.csv, labelled as `timeline_record` does."""
    names = read_frame_labels(labels_path(path))
    unknown = sorted(set(names) - set(clf.classes))
    if unknown:
        raise DatasetError(f"{labels_path(path)}: labels the model does not know: {', '.join(unknown[:5])}")
    truth = np.array([clf.classes.index(n) for n in names])
    top, first, last = np.full(len(truth), -1), first_labelled(clf), None
    records = stream_probs(clf, frames(path, clf.preprocess.size), device=device, hop_frames=1, dtype=dtype)
    for last, (_, probs) in zip(range(first, len(truth)), records):  # frames past the last label are not read
        top[last] = int(probs.argmax())
    if last is None:
        raise VideoError(path, f"no frame could be labelled (the first is frame {first}; it has {len(truth)} labels)")
    return {"path": path, **follow_metrics(truth[: last + 1], top[: last + 1], after=first)}


def evaluate_timelines(folder: str | Path, clf: Classifier, *, device: torch.device,
                       dtype: torch.dtype | None = None) -> dict:
    """`evaluate_timeline` of every video under `folder` with labels beside it, and over all of them
    ("accuracy" weighted by frames, the others by changes); a video that cannot be read is listed
    under "failed" with its reason."""
    from vidclf.data.files import find_videos

    videos = [str(v) for v in find_videos([folder]) if labels_path(v).is_file()]
    if not videos:
        raise DatasetError(f"{folder}: no video with per-frame labels (NAME.labels.csv beside NAME.mp4)")
    rows, failed = [], []
    for path in videos:
        try:
            rows.append(evaluate_timeline(path, clf, device=device, dtype=dtype))
        except VideoError as err:
            failed.append({"path": path, "error": str(err)})

    def weighted(key: str, by: str) -> float | None:
        pairs = [(r[key], r[by]) for r in rows if r[key] is not None]
        return sum(v * w for v, w in pairs) / sum(w for _, w in pairs) if pairs and sum(w for _, w in pairs) else None

    total = {"frames": sum(r["frames"] for r in rows), "changes": sum(r["changes"] for r in rows),
             "accuracy": weighted("accuracy", "frames"), "after_change": weighted("after_change", "changes"),
             "settled": weighted("settled", "changes"), "follow_frames": weighted("follow_frames", "changes")}
    return {**total, "stepwise": stepwise_default(clf), "videos": rows, "failed": failed}
