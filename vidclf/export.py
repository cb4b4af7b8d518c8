"""Export a classifier to ONNX or TorchScript: one file that runs without vidclf, proven against PyTorch.

The exported model takes float32 `clips` (B, T, C, H, W), batch B free, and returns `logits`
(B, len(classes)); every clip counts as full length (there is no lengths input). The file also holds,
as JSON, the classes and the preprocessing (see `metadata`): ONNX under the metadata_props key
"vidclf" (`onnxruntime.InferenceSession(f).get_modelmeta().custom_metadata_map["vidclf"]`),
TorchScript as the extra file "vidclf.json" (`torch.jit.load(f, _extra_files={"vidclf.json": ""})`).

What a deployer does to a video, with `p = metadata["preprocess"]` (this is `video.load_clip` and
`preprocess.to_model_input`, as `vidclf predict` runs them):
1. Pick T = p["num_frames"] frame indices out of the video's N frames (counting from 0).
   sampling "center": stride s = p["frame_stride"], lowered to (N-1)//(T-1) if the clip would not fit;
   span = (T-1)·s + 1; frames start + k·s for k < T, start = (N - span)//2.
   sampling "uniform": frame (2k+1)·N // (2T) for k < T.
   A video of N ≤ T frames gives all its frames; repeat the last one until there are T.
2. Resize each frame to p["size"]×p["size"] with bilinear interpolation (OpenCV INTER_LINEAR), as
   RGB (OpenCV decodes BGR): uint8 (T, H, W, 3) → transpose to (T, 3, H, W).
3. x = (frames / 255 - mean) / std, per RGB channel, with p["mean"] and p["std"].
4. p["input"] "rgb": x. "diff": d, where d[0] = 0 and d[t] = x[t] - x[t-1]. "rgb+diff": x and d
   concatenated along channels (C = 6, RGB first).
5. Stack clips into (B, T, C, H, W) float32; the class of a clip is classes[argmax(logits)].
   A multi-label model (metadata["multi_label"]) outputs `probabilities` instead, a sigmoid per label:
   a clip has every label i with probabilities[i] >= metadata["thresholds"][i] (possibly none).
Unlike `vidclf predict`, which ignores the repeated frames of a video shorter than T, the exported
model sees them as real frames, so its scores for such short videos can differ.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from copy import deepcopy
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidclf import __version__
from vidclf.checkpoint import Classifier
from vidclf.errors import VidclfError
from vidclf.preprocess import in_channels, to_model_input
from vidclf.data.video import load_clip

FORMATS = ("onnx", "torchscript")
EXPORT_BATCH = 2  # batch of the example input; torch.export specialises sizes 0 and 1, so not 1
OPSET = 18  # ONNX opset: the dynamo exporter's native one; onnxruntime ≥ 1.14 runs it

Runner = Callable[[torch.Tensor], np.ndarray]  # float clips (B, T, C, H, W) → logits or probabilities (B, classes)


class ExportError(VidclfError):
    """An export that cannot be made, or whose file does not reproduce the PyTorch model."""


class _Sigmoid(torch.nn.Module):
    """A multi-label model whose outputs are its labels' probabilities, so that the file's user needs
    only the thresholds, not to know which of sigmoid or softmax applies."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.model(clips).sigmoid()


def output_name(clf: Classifier) -> str:
    return "probabilities" if clf.multi_label else "logits"


def metadata(clf: Classifier) -> dict[str, Any]:
    """What the exported file carries besides the graph: enough to preprocess clips and name classes
    (and for a multi-label model, the thresholds that decide which labels a clip has)."""
    pre = clf.preprocess
    labels = {"multi_label": True, "thresholds": list(clf.thresholds)} if clf.multi_label else {}
    return {
        "format_version": 1,
        "vidclf_version": __version__,
        "classes": list(clf.classes),
        "preprocess": asdict(pre),
        "input": {"name": "clips", "dtype": "float32",
                  "shape": ["batch", pre.num_frames, in_channels(pre.input), pre.size, pre.size]},
        "output": {"name": output_name(clf), "shape": ["batch", len(clf.classes)]},
        **labels,
    }


def export_model(clf: Classifier, *, fmt: str, output: str | Path, check_videos: Sequence[str | Path] = (),
                 tolerance: float = 1e-4) -> dict[str, Any]:
    """Write `clf` as `fmt` to `output`, then prove that the file alone gives PyTorch's logits (a
    multi-label model's: probabilities).

    The check decodes `check_videos` as predict does (random frames when none are given) and runs the
    reloaded file on batch sizes other than the exported one, so a batch size baked into the graph
    shows. The file is written under a temporary name and renamed only once it passes: a model that
    fails raises `ExportError` and leaves nothing behind. Returns a report for the CLI to print.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format should be one of {', '.join(FORMATS)}, got {fmt!r}")
    start = time.perf_counter()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    model = deepcopy(clf.model).cpu().eval()  # the caller's model stays where it is
    if clf.multi_label:
        model = _Sigmoid(model).eval()
    name = output_name(clf)
    x = _check_input(clf, check_videos)  # (N, T, C, H, W)
    example = x[torch.arange(EXPORT_BATCH) % len(x)]
    batches = [x[:1], x[torch.arange(max(len(x), EXPORT_BATCH + 1)) % len(x)]]  # neither of EXPORT_BATCH clips

    def write(path: Path) -> float:
        export = _export_onnx if fmt == "onnx" else _export_torchscript
        run = export(model, example, path, json.dumps(metadata(clf)), name)
        return max(float(np.abs(run(b) - _torch_logits(model, b)).max()) for b in batches)

    diff = write_checked(output, write, tolerance=tolerance, what=f"{fmt} model's {name}")
    return {"format": fmt, "path": str(output), "output": name, "bytes": output.stat().st_size, "max_abs_diff": diff,
            "clips": len(check_videos), "batch_sizes": [len(b) for b in batches],
            "seconds": round(time.perf_counter() - start, 2)}


def write_checked(output: Path, write: Callable[[Path], float], *, tolerance: float, what: str) -> float:
    """`write(path)` exports to a temporary name and returns the largest difference of the file's outputs
    from PyTorch's; the file becomes `output` only within `tolerance`, else ExportError and nothing is left."""
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        diff = write(tmp)
        if not diff <= tolerance:  # `not <=`: a NaN fails too
            raise ExportError(f"{output}: the exported {what} differ from PyTorch's by up to "
                              f"{diff:.3g} (tolerance {tolerance:g}); nothing was written")
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return diff


def _check_input(clf: Classifier, videos: Sequence[str | Path]) -> torch.Tensor:
    """Model input (N, T, C, H, W) decoded as predict decodes, every clip full length."""
    pre = clf.preprocess
    if videos:
        frames = [load_clip(v, num_frames=pre.num_frames, size=pre.size, sampling=pre.sampling,
                            stride=pre.frame_stride)[0] for v in videos]
        clips = torch.from_numpy(np.stack(frames)).permute(0, 1, 4, 2, 3)  # (N, T, H, W, 3) → (N, T, 3, H, W)
    else:  # still proves the graph and the dynamic batch, on less realistic input
        clips = torch.randint(0, 256, (EXPORT_BATCH + 1, pre.num_frames, 3, pre.size, pre.size),
                              generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    return to_model_input(clips, torch.full((len(clips),), pre.num_frames), pre).contiguous()


def _torch_logits(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """The reference the exported file must reproduce."""
    with torch.no_grad():
        return model(x).numpy()


@contextlib.contextmanager
def _known_warnings_hidden() -> Iterator[None]:
    """Hide warnings torch gives on every export and that say nothing about this one: torch.jit's
    deprecation (it still works in torch 2.14), and tracer and exporter notes from inside torch's
    own RNN code. Whether the file is right is decided by the parity check, not by these."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", FutureWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", r"_check_is_size will be removed", FutureWarning)
        warnings.filterwarnings("ignore", r"The tensor attributes self\.(model\.)?rnn\._flat_weights", UserWarning)
        yield


def _export_torchscript(model: torch.nn.Module, example: torch.Tensor, path: Path, info: str, output: str) -> Runner:
    """Trace (every model here has a fixed control flow for full-length clips) and reload the file."""
    with _known_warnings_hidden(), torch.no_grad():
        traced = torch.jit.trace(model, (example,), check_trace=False)  # the parity check is stricter
        torch.jit.save(traced, str(path), _extra_files={"vidclf.json": info})
        loaded = torch.jit.load(str(path), map_location="cpu")

    def run(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return loaded(x).numpy()

    return run


def _export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path, info: str, output: str) -> Runner:
    """The torch.export-based exporter (dynamo=True, default since torch 2.9), asked for by name.

    The TorchScript-based exporter cannot export adaptive pooling to a grid once the batch is dynamic
    (cnn-lstm's default grid=4). torch.export unrolls the recurrence over the fixed T, which is fine.
    The exported model takes no lengths, so the bidirectional cnn-lstm does not pack its sequence
    (torch.export cannot trace `pack_padded_sequence`).
    """
    try:
        import onnx
        import onnxruntime
        import onnxscript  # noqa: F401  (torch's exporter needs it)
    except ImportError as err:
        raise ExportError(f"ONNX export needs onnx, onnxscript and onnxruntime ({err.name} is missing): "
                          "pip install 'vidclf[export]'") from None
    with _known_warnings_hidden():
        torch.onnx.export(model, (example,), str(path), dynamo=True, external_data=False, opset_version=OPSET,
                          input_names=["clips"], output_names=[output], verbose=False,
                          dynamic_shapes=({0: torch.export.Dim("batch")},))
    proto = onnx.load(str(path))
    proto.metadata_props.add(key="vidclf", value=info)
    onnx.save(proto, str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run([output], {"clips": x.numpy()})[0]
