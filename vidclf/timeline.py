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

from typing import Iterator

import torch

from vidclf.checkpoint import Classifier
from vidclf.data.video import VideoError
from vidclf.predict import topk_record
from vidclf.stream import DEFAULT_FPS, frames, stream_probs


def segments(times: list[float], probs: torch.Tensor, classes: list[str], *, interval: float) -> list[dict]:
    """Runs of the same top label among frames at `times` with probabilities `probs` (N, classes)."""
    top = probs.argmax(dim=1).tolist()
    out: list[dict] = []
    start = 0
    for i in range(1, len(top) + 1):
        if i < len(top) and top[i] == top[start]:
            continue
        end = times[i] if i < len(top) else times[-1] + interval
        score = float(probs[start:i, top[start]].mean())
        out.append({"start": round(times[start], 3), "end": round(end, 3), "label": classes[top[start]],
                    "score": round(score, 6)})
        start = i
    return out


def timeline_record(path: str, clf: Classifier, *, device: torch.device, dtype: torch.dtype | None = None,
                    top_k: int = 5) -> dict:
    """{path, label, score, topk, error, timeline}: the video's scores are the mean over its labelled frames."""
    try:
        labelled = list(stream_probs(clf, frames(path, clf.preprocess.size), device=device, hop_frames=1, dtype=dtype))
    except VideoError as err:
        return {**topk_record(path, None, clf.classes, top_k, error=str(err)), "timeline": []}
    if not labelled:
        span = (clf.preprocess.num_frames - 1) * clf.preprocess.frame_stride + 1
        error = f"{path}: shorter than the model's clip span ({span} frames): no frame can be labelled"
        return {**topk_record(path, None, clf.classes, top_k, error=error), "timeline": []}
    times = [t for t, _ in labelled]
    probs = torch.stack([p for _, p in labelled])  # (N, classes)
    interval = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else 1 / DEFAULT_FPS
    return {**topk_record(path, probs.mean(dim=0), clf.classes, top_k),
            "timeline": segments(times, probs, clf.classes, interval=interval)}


def timeline_records(paths: list[str], clf: Classifier, *, device: torch.device, dtype: torch.dtype | None = None,
                     top_k: int = 5) -> Iterator[dict]:
    """One `timeline_record` per path, in order."""
    for path in paths:
        yield timeline_record(path, clf, device=device, dtype=dtype, top_k=top_k)
