"""Export one step of a recurrent model (`vidclf export --step`): a frame and the state in, the logits
and the next state out, so a device runs a live stream the way MoViNet-Stream exports one frame.

The file runs `framestep.FrameStep`, the same module `vidclf stream` runs, preprocessing included:
inputs `frame`, uint8 RGB (B, 3, size, size) as decoded and resized (OpenCV INTER_LINEAR, RGB order),
and `state0` … `stateN-1`; outputs `logits` (B, classes) and `next_state0` … `next_stateN-1`, which
are the next frame's `state0` …. A stream starts, and is reset, with every state input zero (the
shapes and dtypes are in the metadata, batch first); nothing else is needed. The metadata is JSON
under the same keys as a clip export (vidclf/export.py), with "step" describing the inputs and outputs.
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from copy import deepcopy
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from vidclf import __version__
from vidclf.checkpoint import Classifier
from vidclf.export import EXPORT_BATCH, FORMATS, OPSET, ExportError, _known_warnings_hidden, write_checked
from vidclf.framestep import FrameStep
from vidclf.models import can_step

CHECK_FRAMES = 24  # frames of each check stream, the state carried through all of them
StepRunner = Callable[..., list[np.ndarray]]  # (frame, *state) → [logits, *next state]


def step_metadata(clf: Classifier, state: Sequence[torch.Tensor]) -> dict[str, Any]:
    """What the file carries besides the graph: classes, preprocessing, and how to feed the step."""
    size = clf.preprocess.size
    states = [{"name": f"state{i}", "dtype": str(s.dtype).removeprefix("torch."), "shape": ["batch", *s.shape[1:]]}
              for i, s in enumerate(state)]
    return {
        "format_version": 1, "vidclf_version": __version__, "classes": list(clf.classes),
        "preprocess": asdict(clf.preprocess),
        "step": {"inputs": [{"name": "frame", "dtype": "uint8", "shape": ["batch", 3, size, size]}, *states],
                 "outputs": ["logits", *(f"next_{s['name']}" for s in states)],
                 "start": "every state input zeros; feed each next_stateI back as stateI; zeros again to reset"},
    }


def export_step(clf: Classifier, *, fmt: str, output: str | Path, check_streams: Sequence[np.ndarray] = (),
                tolerance: float = 1e-4) -> dict[str, Any]:
    """Write one step of `clf` as `fmt` to `output`, then prove it: streams of frames, the state carried,
    give the logits of PyTorch's step (what `stream` computes) at every frame, at batch sizes other than
    the exported one. `check_streams`: uint8 (N, size, size, 3) frames each (random frames when none).
    A file that fails raises `ExportError` and is not left behind."""
    if fmt not in FORMATS:
        raise ValueError(f"format should be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not can_step(clf.model):
        raise ExportError(f"{clf.path}: this architecture cannot read a stream frame by frame, so it has no step to export")
    start = time.perf_counter()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    step = FrameStep(deepcopy(clf.model), clf.preprocess).cpu().eval()  # the caller's model stays where it is
    frames = _check_frames(clf, check_streams)  # (streams, N, 3, H, W)
    example = (frames[torch.arange(EXPORT_BATCH) % len(frames), 0], *step.initial_state(EXPORT_BATCH))
    batches = [frames[:1], frames[torch.arange(max(len(frames), EXPORT_BATCH + 1)) % len(frames)]]

    def write(path: Path) -> float:
        export = _onnx if fmt == "onnx" else _torchscript
        run = export(step, example, path, json.dumps(step_metadata(clf, example[1:])))
        return max(_max_diff(step, run, b) for b in batches)

    diff = write_checked(output, write, tolerance=tolerance, what=f"{fmt} step's logits")
    return {"format": fmt, "path": str(output), "output": "logits", "bytes": output.stat().st_size, "max_abs_diff": diff, "step": True,
            "frames": frames.shape[1], "batch_sizes": [len(b) for b in batches],
            "seconds": round(time.perf_counter() - start, 2)}


def _check_frames(clf: Classifier, streams: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 (S, N, 3, H, W): the streams cut to a common length, or random frames."""
    size = clf.preprocess.size
    if streams:
        n = min(CHECK_FRAMES, *(len(s) for s in streams))
        return torch.from_numpy(np.stack([s[:n] for s in streams])).permute(0, 1, 4, 2, 3).contiguous()
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (EXPORT_BATCH + 1, CHECK_FRAMES, 3, size, size), generator=generator).to(torch.uint8)


@torch.no_grad()
def _max_diff(step: FrameStep, run: StepRunner, frames: torch.Tensor) -> float:
    """The largest difference of logits over a stream run by both, each carrying its own state."""
    ours, theirs, diff = step.initial_state(len(frames)), [s.numpy() for s in step.initial_state(len(frames))], 0.0
    for t in range(frames.shape[1]):
        logits, *ours = step(frames[:, t], *ours)
        got, *theirs = run(frames[:, t].numpy(), *theirs)
        diff = max(diff, float(np.abs(got - logits.numpy()).max()))
    return diff


@contextlib.contextmanager
def _step_warnings_hidden():
    """export.py's, and the same notes about the recurrent layer, now one module deeper (self.model.rnn),
    and that the inputs' batch dimensions, one dimension, get one name."""
    with _known_warnings_hidden(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"The tensor attributes self\.model\.rnn\._flat_weights", UserWarning)
        warnings.filterwarnings("ignore", r"# The axis name: batch will not be used", UserWarning)
        yield


def _torchscript(step: FrameStep, example: tuple[torch.Tensor, ...], path: Path, info: str) -> StepRunner:
    with _step_warnings_hidden(), torch.no_grad():
        traced = torch.jit.trace(step, example, check_trace=False)  # the parity check is stricter
        torch.jit.save(traced, str(path), _extra_files={"vidclf.json": info})
        loaded = torch.jit.load(str(path), map_location="cpu")

    def run(*inputs: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [o.numpy() for o in loaded(*(torch.from_numpy(i) for i in inputs))]

    return run


def _onnx(step: FrameStep, example: tuple[torch.Tensor, ...], path: Path, info: str) -> StepRunner:
    """As vidclf/export.py's ONNX export: torch.export, the batch dynamic in every input."""
    try:
        import onnx
        import onnxruntime
        import onnxscript  # noqa: F401  (torch's exporter needs it)
    except ImportError as err:
        raise ExportError(f"ONNX export needs onnx, onnxscript and onnxruntime ({err.name} is missing): "
                          "pip install 'vidclf[export]'") from None
    n = len(example) - 1
    inputs = ["frame", *(f"state{i}" for i in range(n))]
    outputs = ["logits", *(f"next_state{i}" for i in range(n))]
    batch = torch.export.Dim("batch")
    with _step_warnings_hidden():
        torch.onnx.export(step, example, str(path), dynamo=True, external_data=False, opset_version=OPSET,
                          input_names=inputs, output_names=outputs, verbose=False,
                          dynamic_shapes=({0: batch}, tuple({0: batch} for _ in example[1:])))  # frame, *state
    proto = onnx.load(str(path))
    proto.metadata_props.add(key="vidclf", value=info)
    onnx.save(proto, str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda *values: session.run(outputs, dict(zip(inputs, values)))
