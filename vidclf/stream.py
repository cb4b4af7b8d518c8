"""Classifying a video as it plays: one record per hop, as soon as its frame arrives.

Two pieces. `frames(source, size)` reads a file, a camera, a URL or stdin with OpenCV and yields each
frame with its time as it is decoded. `stream_records(clf, frames, …)` labels them. A checkpoint
trained for streams (`train --online`) makes one recurrent step per frame and carries its state
(vidclf/framestep.py): a record costs one frame. Any other sends each frame through the per-frame
part of the model (`model.frame_features`) once, keeps those results for the last clip span in a
ring buffer, and each hop reruns only what depends on where the window starts
(`model.sequence_features`): a record costs about one frame's CNN, not a whole clip's.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Iterable, Iterator

import cv2
import numpy as np
import torch

from vidclf.data import video
from vidclf.checkpoint import Classifier
from vidclf.device import autocast
from vidclf.framestep import Stepper
from vidclf.models import can_step
from vidclf.predict import topk_record
from vidclf.preprocess import Preprocess, to_model_input
from vidclf.data.video import VideoError

STALL_MS = 10_000  # a URL that sends nothing for this long while opening or reading counts as dropped
DEFAULT_FPS = 25.0  # for sources that give neither timestamps nor a frame rate, as predict assumes


def _open_source(source: str | int) -> cv2.VideoCapture | None:
    """A capture for `source`; None for a URL that cannot be opened now (it may come back), else raises."""
    if isinstance(source, int) or source.isdigit():
        cap = cv2.VideoCapture(int(source))
        if not cap.isOpened():
            raise VideoError(f"camera {int(source)}", "no such camera, or it cannot be opened (busy or no permission)")
        return cap
    if source == "-":
        if os.isatty(0):
            raise VideoError("-", "nothing is piped to standard input")
        cap = cv2.VideoCapture("pipe:0", cv2.CAP_FFMPEG)  # FFmpeg reads file descriptor 0 itself
        if not cap.isOpened():
            raise VideoError("-", "standard input is not a stream OpenCV can read "
                                  "(pipe a streamable container, e.g. ffmpeg … -f mpegts -)")
        return cap
    if "://" in source:
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STALL_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, STALL_MS]
        cap = cv2.VideoCapture(source, cv2.CAP_FFMPEG, params)
        return cap if cap.isOpened() else None
    return video._open(source, threads=0)  # a file: the precise reasons video.py gives for bad files


def _fps(cap: cv2.VideoCapture) -> float:
    fps = cap.get(cv2.CAP_PROP_FPS)
    return fps if 0 < fps < 1000 else DEFAULT_FPS  # 0, or nonsense, from some streams


def _decode(cap: cv2.VideoCapture, source: str | int, size: int) -> Iterator[tuple[float, np.ndarray]]:
    """(seconds since this capture's first frame, RGB frame) until the capture gives no more frames."""
    fps, first_ms = _fps(cap), None
    for index in itertools.count():
        try:
            ok, frame = cap.read()
        except cv2.error as err:
            raise VideoError(source, f"decoding failed ({video._last_line(err)})") from None
        if not ok or frame is None:
            return
        ms = cap.get(cv2.CAP_PROP_POS_MSEC)  # 0 or less from sources without timestamps
        first_ms = ms if first_ms is None else first_ms
        yield ((ms - first_ms) / 1000 if ms > first_ms else index / fps), video.to_rgb(frame, size)


def frames(source: str | int, size: int, *, reconnect_tries: int = 3,
           backoff_s: float = 1.0) -> Iterator[tuple[float, np.ndarray]]:
    """(time in seconds, uint8 (size, size, 3) RGB frame) for each frame, as the source delivers it.

    `source`: a video file (read at decoding speed, as if live); a camera index (an int, or digits);
    a URL (rtsp://, http://, …); or `-`, a container stream on stdin, which FFmpeg reads as `pipe:0`
    and which must therefore be streamable (MPEG-TS, Matroska, fragmented MP4; not an MP4 whose index
    is at its end). Time is the source's own timestamp, from 0 at the first frame, where it gives one,
    else frame index / fps. A live URL (one without a known length) that cannot be opened or stops
    sending is reopened, `reconnect_tries` attempts in all, waiting `backoff_s` doubling between them;
    the clock continues across a reconnect. Files, cameras, stdin and URLs of files end with their frames.
    """
    url = isinstance(source, str) and "://" in source
    failures, offset, last = 0, 0.0, None
    while True:
        cap = _open_source(source)
        live = url and (cap is None or cap.get(cv2.CAP_PROP_FRAME_COUNT) <= 0)  # a file over HTTP has a length
        if cap is not None:
            interval = 1 / _fps(cap)  # the clock after a reconnect goes on one frame after the last
            try:
                for t, frame in _decode(cap, source, size):
                    failures, last = 0, offset + t
                    yield last, frame
            finally:
                cap.release()
            offset = offset if last is None else last + interval
        if not live:
            return
        failures += 1
        if failures >= reconnect_tries:
            if last is None:
                raise VideoError(source, f"cannot be opened or sends no frames ({failures} tries)")
            raise VideoError(source, f"the stream dropped and could not be reopened ({failures} tries)")
        time.sleep(backoff_s * 2 ** (failures - 1))


class RingBuffer:
    """The last span's frames and their per-frame model results, each computed once, lazily.

    With difference channels (input diff or rgb+diff), a frame's input depends on its place in the
    window: x_t − x_(t−stride) inside, zero for the window's first frame. So `features` holds each
    frame's result with its true difference and `first` the result as a window's first frame; the
    latter is computed only for frames that do start a window. Both come from `to_model_input` on a
    (previous, frame) pair, or (frame, frame) for a zero difference, so inputs equal offline clips'.
    """

    def __init__(self, model: torch.nn.Module, pre: Preprocess, device: torch.device, dtype: torch.dtype | None):
        self.model, self.pre, self.device, self.dtype = model, pre, device, dtype
        self.stride = pre.frame_stride
        self.span = (pre.num_frames - 1) * pre.frame_stride + 1  # frames one window covers
        self.first_record = self.span - 1  # frames before the first record
        self.frames: dict[int, torch.Tensor] = {}  # frame index → uint8 (3, H, W) on the device
        self.features: dict[int, torch.Tensor] = {}  # frame index → frame_features with its true difference
        self.first: dict[int, torch.Tensor] = {}  # frame index → frame_features as a window's first frame
        if pre.input == "rgb":
            self.first = self.features  # no difference channels: one result serves both places

    def add(self, index: int, frame: np.ndarray) -> None:
        """Hold frame `index` (uint8 (H, W, 3) RGB); forget everything older than one span before it."""
        self.frames[index] = torch.from_numpy(frame).permute(2, 0, 1).to(self.device)  # (H, W, 3) → (3, H, W)
        oldest = index - self.span + 1
        for held in (self.frames, self.features, self.first):
            for k in [k for k in held if k < oldest]:
                del held[k]

    @torch.inference_mode()
    def logits(self, newest: int) -> torch.Tensor:
        """Logits (classes,) of the window whose last frame is `newest`, as the offline clip would give."""
        first, *rest = range(newest - self.span + 1, newest + 1, self.stride)
        todo = [(k - self.stride, k, self.features) for k in rest if k not in self.features]
        if first not in self.first:
            todo.append((first, first, self.first))  # paired with itself: a zero difference
        with autocast(self.device, self.dtype):
            if todo:
                pairs = [torch.stack([self.frames[a], self.frames[b]]) for a, b, _ in todo]  # N × (2, 3, H, W)
                pairs = torch.stack(pairs)  # (N, 2, 3, H, W)
                full = torch.full((len(todo),), 2, device=self.device)
                x = to_model_input(pairs, full, self.pre)[:, 1]  # (N, C, H, W): each pair's second frame
                out = self.model.frame_features(x[None])[0]  # as one clip (1, N, C, H, W) → (N, …)
                for (_, k, held), result in zip(todo, out):
                    held[k] = result
            seq = torch.stack([self.first[first]] + [self.features[k] for k in rest])[None]  # (1, T, …)
            return self.model.forward_head(self.model.sequence_features(seq))[0].float()


def stream_records(clf: Classifier, frames: Iterable[tuple[float, np.ndarray]], *, device: torch.device,
                   hop_s: float | None = None, hop_frames: int | None = None, top_k: int = 5,
                   dtype: torch.dtype | None = None, stepwise: bool | None = None,
                   reset_s: float | None = None) -> Iterator[dict]:
    """{time, label, score, topk} (and a multi-label model's labels present) each hop, as soon as the hop's
    frame arrives: see `stream_probs`."""
    for t, probs in stream_probs(clf, frames, device=device, hop_s=hop_s, hop_frames=hop_frames, dtype=dtype,
                                 stepwise=stepwise, reset_s=reset_s):
        record = topk_record("", probs, clf.classes, top_k, thresholds=clf.thresholds)
        del record["path"], record["error"]
        yield {"time": round(t, 3), **record}


def stepwise_default(clf: Classifier) -> bool:
    """How a checkpoint reads a stream unless told: one recurrent step a frame if it was trained for
    streams (`train --online`), else by windows of its clip span, as it was trained."""
    return clf.online and can_step(clf.model)


def stream_probs(clf: Classifier, frames: Iterable[tuple[float, np.ndarray]], *, device: torch.device,
                 hop_s: float | None = None, hop_frames: int | None = None, dtype: torch.dtype | None = None,
                 stepwise: bool | None = None, reset_s: float | None = None) -> Iterator[tuple[float, torch.Tensor]]:
    """(time, class probabilities on the CPU) each hop, as soon as the hop's frame arrives.

    `stepwise` (default: `stepwise_default`) makes one recurrent step per frame with the state carried
    from the first frame on (vidclf/framestep.py), restarted every `reset_s` seconds if given, and a record
    is possible from the first frame. Otherwise each record is of the last clip span, the last
    `num_frames` frames at the model's `frame_stride`, and the first comes once a whole span has arrived
    (a source shorter than a span gives none). Give one hop: every `hop_frames` frames, or the first
    frame at least `hop_s` seconds (by frame time) after the last record. `frames` yields (time, uint8
    (size, size, 3) RGB) at the checkpoint's size, as `frames()` does.
    """
    if (hop_s is None) == (hop_frames is None):
        raise ValueError("give exactly one of hop_s and hop_frames")
    if (hop_s is not None and hop_s <= 0) or (hop_frames is not None and hop_frames < 1):
        raise ValueError(f"the hop should be positive, got hop_s={hop_s}, hop_frames={hop_frames}")
    stepwise = stepwise_default(clf) if stepwise is None else stepwise
    if stepwise and not can_step(clf.model):
        raise ValueError(f"{clf.path}: this architecture cannot read a stream frame by frame "
                         "(only forward-reading recurrent models can)")
    if reset_s is not None and not (stepwise and reset_s > 0):
        raise ValueError(f"a reset every {reset_s} s needs a positive time and a model stepping frame by frame")
    size = clf.preprocess.size
    reader = (Stepper if stepwise else RingBuffer)(clf.model, clf.preprocess, device, dtype)
    last_index, last_time, reset_time = None, 0.0, 0.0
    for index, (t, frame) in enumerate(frames):
        if frame.shape != (size, size, 3):
            raise ValueError(f"frames should be ({size}, {size}, 3) as the checkpoint expects, got {frame.shape}")
        if reset_s is not None and t - reset_time + 1e-6 >= reset_s:
            reader.reset()
            reset_time = t
        reader.add(index, frame)
        if index < reader.first_record:
            continue
        if last_index is not None:
            waited = index - last_index if hop_frames else t - last_time + 1e-6  # times in ms: 0.24 − 0.04 < 0.2
            if waited < (hop_frames or hop_s):
                continue
        last_index, last_time = index, t
        yield t, clf.probabilities(reader.logits(index)).cpu()
