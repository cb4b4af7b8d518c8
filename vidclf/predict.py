"""Predictions and embeddings for video files: one record per video (and per window of long videos),
streamed in input order, so a pipe or an --output file gets each as soon as it is ready."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from vidclf.checkpoint import Classifier
from vidclf.data.datasets import Batch, ClipDataset, default_workers
from vidclf.data.feed import BatchDecoder, stack_as_planes
from vidclf.data.files import Sample, find_videos
from vidclf.data.decoder import Decoder
from vidclf.evaluate import iter_logits, per_video
from vidclf.lanes import in_lanes, keep_freed_memory


def expand_inputs(inputs: Iterable[str], stdin: Iterable[str] = ()) -> list[str]:
    """Files as given, folders searched recursively, `-` replaced by the paths read from stdin."""
    out: list[str] = []
    for item in inputs:
        if item == "-":
            out += [line.strip() for line in stdin if line.strip()]
        else:
            out += [str(p) for p in find_videos([item])]
    return out


def resume_output(path: Path) -> set[str]:
    """Prepare `--output FILE --resume`: the paths FILE already holds a result for.

    A last line cut by a kill is dropped, and so are records with an error (those inputs are tried
    again), so that after the resumed run FILE holds every input exactly once. The file is rewritten
    atomically; the caller then appends.
    """
    if not path.exists():
        return set()
    kept, done = [], set()
    for line in path.read_bytes().split(b"\n"):
        try:
            record = json.loads(line)
        except ValueError:
            continue  # the cut last line (or an empty one)
        if isinstance(record, dict) and record.get("error") is None and "path" in record:
            kept.append(line + b"\n")
            done.add(record["path"])
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(b"".join(kept))
    os.replace(tmp, path)
    return done


def topk_record(path: str, probs: torch.Tensor | None, classes: list[str], k: int, error: str | None = None,
                thresholds: list[float] | None = None) -> dict:
    """The record of one video (path, label, score, topk, error), the same in predict, windows and streams;
    with a multi-label model's `thresholds`, also `labels`: every label present (`present_labels`)."""
    present = {} if thresholds is None else {"labels": []}
    if probs is None:
        return {"path": path, "label": None, "score": None, "topk": [], **present, "error": error}
    scores, idx = probs.topk(min(k, len(classes)))
    topk = [{"label": classes[i], "score": round(float(s), 6)} for s, i in zip(scores, idx)]
    if thresholds is not None:
        present["labels"] = present_labels(probs, classes, thresholds)
    return {"path": path, "label": topk[0]["label"], "score": topk[0]["score"], "topk": topk, **present, "error": None}


def present_labels(probs: torch.Tensor, classes: list[str], thresholds: list[float]) -> list[dict]:
    """Every label scored at or above its threshold, highest first, with its score: possibly none."""
    present = [(float(p), c) for p, c, t in zip(probs.tolist(), classes, thresholds) if p >= t]
    return [{"label": c, "score": round(p, 6)} for p, c in sorted(present, key=lambda x: -x[0])]


def predict(paths: list[str], clf: Classifier, *, device: torch.device, dtype: torch.dtype | None = None,
            batch_size: int = 16, workers: int | None = None, top_k: int = 5, decoder: Decoder | None = None,
            window: float | None = None, stride: float | None = None, views: tuple[int, int] = (1, 1)) -> Iterator[dict]:
    """One record per path, in order: of the centre clip, or with `window` also of each window."""
    if window is not None:
        for path in paths:
            yield predict_windows(path, clf, device=device, dtype=dtype, window=window, stride=stride,
                                  batch_size=batch_size, top_k=top_k, decoder=decoder)
        return
    yield from predict_files(paths, clf, device=device, dtype=dtype, batch_size=batch_size,
                             workers=choose_workers(len(paths), workers), top_k=top_k, decoder=decoder, views=views)


def choose_workers(files: int, workers: int | None) -> int:
    """Decoding processes for `files` inputs, unless the user chose: one a core, or none (0) for fewer
    files than cores.

    With none, one decoding child uses OpenCV's own threads, which for a few large files is several
    times faster than one single-threaded decoder per file (5x for 720p on 16 cores).
    """
    if workers is not None:
        return workers
    cores = default_workers()
    return 0 if files < cores else cores


def predict_files(paths: list[str], clf: Classifier, *, device: torch.device, dtype: torch.dtype | None = None,
                  batch_size: int = 16, workers: int = 0, top_k: int = 5, decoder: Decoder | None = None,
                  views: tuple[int, int] = (1, 1)) -> Iterator[dict]:
    """Decode in `workers` processes (0: one, with OpenCV's threads), classify in batches, yield
    records in the order of `paths`; with `views` (clips, crops), of the mean over the views."""
    for path, probs, error in _outputs(paths, clf, device=device, dtype=dtype, batch_size=batch_size,
                                       workers=workers, decoder=decoder, features=False, views=views):
        yield topk_record(path, None if error else probs, clf.classes, top_k, error=error, thresholds=clf.thresholds)


def embed_files(paths: list[str], clf: Classifier, *, device: torch.device, dtype: torch.dtype | None = None,
                batch_size: int = 16, workers: int | None = None, decoder: Decoder | None = None,
                views: tuple[int, int] = (1, 1)) -> Iterator[dict]:
    """One record per path, in order: `forward_features` (the vector before the head, for search,
    clustering or another model) of its centre clip, or the mean over its `views`."""
    for path, vector, error in _outputs(paths, clf, device=device, dtype=dtype, batch_size=batch_size,
                                        workers=choose_workers(len(paths), workers), decoder=decoder,
                                        features=True, views=views):
        yield {"path": path, "embedding": None if error else [round(float(v), 6) for v in vector], "error": error}


def save_npy(records: Iterable[dict], path: Path) -> int:
    """Embeddings as one (N, D) float32 array in `path` and its rows' paths, one a line, beside it in
    PATH.paths.txt; inputs that failed have no row. Returns N."""
    rows, names = [], []
    for record in records:
        if record["error"] is None:
            rows.append(record["embedding"])
            names.append(record["path"])
    with open(path, "wb") as f:  # a file object: np.save would add .npy to a name without it
        np.save(f, np.asarray(rows, dtype=np.float32).reshape(len(rows), -1))
    Path(f"{path}.paths.txt").write_text("".join(f"{name}\n" for name in names), encoding="utf-8")
    return len(rows)


def _outputs(paths: list[str], clf: Classifier, *, device: torch.device, dtype: torch.dtype | None, batch_size: int,
             workers: int, decoder: Decoder | None, features: bool,
             views: tuple[int, int]) -> Iterator[tuple[str, torch.Tensor, str | None]]:
    """(path, probabilities or features, error) for each path in order, the mean over its views;
    the row is empty on an error. Each of `workers` lanes (at least one) decodes a batch through its
    own child, then runs the model on it."""
    keep_freed_memory()
    dataset = ClipDataset([Sample(p, 0) for p in paths], clf.preprocess, threads=1 if workers else 0, decoder=decoder,
                          views=views)
    batches = (range(s, min(s + batch_size, len(paths))) for s in range(0, len(paths), batch_size))

    @contextlib.contextmanager
    def lane(_: int) -> Iterator:
        with BatchDecoder(dataset, batch_size) as batch_decoder:
            yield lambda indices: _rows(batch_decoder.decode(indices), clf, device, dtype, features, paths)

    lanes = max(workers, 1)
    for rows in in_lanes(lanes, lambda: next(batches, None), lane, threads=lane_threads(lanes)):
        yield from rows


def _rows(batch: Batch, clf: Classifier, device: torch.device, dtype: torch.dtype | None, features: bool,
          paths: list[str]) -> list[tuple[str, torch.Tensor, str | None]]:
    """A batch's (path, probabilities or features, error), in input order."""
    ready = [(f.index, f.path, torch.zeros(0), f.reason) for f in batch.failures]
    for _, out in iter_logits(clf.model, [batch], clf.preprocess, device, dtype, features=features):
        if len(out):
            rows, _ = per_video(out if features else clf.probabilities(out), batch.views)
            ready += [(int(i), paths[int(i)], row, None) for i, row in zip(batch.indices[:: batch.views], rows)]
    return [(path, row, error) for _, path, row, error in sorted(ready, key=lambda r: r[0])]


def lane_threads(lanes: int) -> int:
    """The model's intra-op threads in each of `lanes` lanes: the cores shared out, so that the lanes
    never ask for more cores than there are (on a GPU they only run the few CPU operations)."""
    return max(1, default_workers() // lanes)


def predict_windows(path: str, clf: Classifier, *, device: torch.device, dtype: torch.dtype | None = None,
                    window: float, stride: float | None = None, batch_size: int = 16, top_k: int = 5,
                    decoder: Decoder | None = None) -> dict:
    """Classify windows of `window` seconds every `stride` seconds, reading the video once.

    The video-level scores are the mean of the windows' probabilities. The lanes take batches of
    windows in turn from the one decoding child; only a few batches (about one a lane) are in memory
    at a time, so a video of any length fits.
    """
    from vidclf.data import video

    keep_freed_memory()
    pre = clf.preprocess
    decoder = decoder or Decoder()
    try:
        info = decoder.call(video.probe, path)
        fps = info.fps if info.fps and info.fps > 0 else 25.0
        lanes = default_workers()
        # The one decoder of the video gets half the cores on a CPU, where the lanes' models use them too
        # (on 2 cores one thread: 180–197 windows/s against 147–166 with OpenCV's threads), and OpenCV's
        # threads on a GPU machine, where decoding is the slower side.
        windows_of_video = decoder.iterate(
            video.iter_windows, path, window=max(1, round(window * fps)), stride=max(1, round((stride or window) * fps)),
            num_frames=pre.num_frames, size=pre.size, sampling=pre.sampling, frame_stride=pre.frame_stride,
            threads=max(1, lanes // 2) if device.type == "cpu" else 0)
        windows, total = [], 0
        try:
            for bounds, probs in in_lanes(lanes, lambda: list(itertools.islice(windows_of_video, batch_size)) or None,
                                          lambda _: contextlib.nullcontext(lambda ws: _window_probs(ws, clf, device, dtype)),
                                          threads=lane_threads(lanes)):
                total = total + probs.sum(0)
                windows += [_window_record(start / fps, end / fps, p, clf) for (start, end), p in zip(bounds, probs)]
        finally:
            windows_of_video.close()  # a video abandoned half-way: its child is ended
    except video.VideoError as err:
        return {**topk_record(path, None, clf.classes, top_k, error=str(err), thresholds=clf.thresholds), "windows": []}
    return {**topk_record(path, total / len(windows), clf.classes, top_k, thresholds=clf.thresholds), "windows": windows}


def _window_record(start: float, end: float, probs: torch.Tensor, clf: Classifier) -> dict:
    """A window's times and top label; a multi-label model's also every label present."""
    score, i = probs.max(0)
    record = {"start": round(start, 3), "end": round(end, 3), "label": clf.classes[int(i)], "score": round(float(score), 6)}
    if clf.thresholds is not None:
        record["labels"] = present_labels(probs, clf.classes, clf.thresholds)
    return record


def _window_probs(windows: list, clf: Classifier, device: torch.device,
                  dtype: torch.dtype | None) -> tuple[list[tuple[int, int]], torch.Tensor]:
    """A batch of windows' (start, end) frames and probabilities (B, classes); their frames are let go."""
    n = len(windows)
    batch = Batch(torch.from_numpy(stack_as_planes([w.frames for w in windows])), torch.tensor([w.length for w in windows]),
                  torch.zeros(n, dtype=torch.long), torch.arange(n), [])  # (B, T, H, W, 3)
    ((_, logits),) = iter_logits(clf.model, [batch], clf.preprocess, device, dtype)
    return [(w.start, w.end) for w in windows], clf.probabilities(logits)
