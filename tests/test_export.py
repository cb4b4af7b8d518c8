"""Export: every architecture to ONNX and TorchScript, and the file alone is enough to deploy it."""

from __future__ import annotations

import json
import sys
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import pytest
import torch

from vidclf import export
from vidclf.checkpoint import Classifier, load_classifier
from vidclf.export import ExportError, export_model
from vidclf.models import build_model
from vidclf.preprocess import Preprocess, in_channels, to_model_input

CLASSES = ["left", "right", "still"]
RNN = dict(feature_size=16, hidden_size=8)
CONV = dict(stem_channels=8, hidden_channels=(8,), kernel_sizes=(3,))
# id: (architecture, config, input mode): every backbone, recurrent layer, direction, cell and input mode
ARCHS: dict[str, tuple[str, dict, str]] = {
    "small-lstm": ("cnn-lstm", dict(backbone="small", **RNN), "rgb"),
    "small-lstm-bidirectional": ("cnn-lstm", dict(backbone="small", bidirectional=True, **RNN), "rgb+diff"),
    "resnet18-gru": ("cnn-lstm", dict(backbone="resnet18", rnn="gru", grid=1, **RNN), "rgb+diff"),
    "mobilenet-rnn-bidirectional-2-layers": (
        "cnn-lstm", dict(backbone="mobilenet_v3_small", rnn="rnn", bidirectional=True, num_layers=2, grid=2, **RNN),
        "rgb+diff"),
    "convgru-2-layers": ("convgru", dict(stem_channels=8, hidden_channels=(8, 8), kernel_sizes=(3, 3)), "rgb+diff"),
    "convlstm": ("convlstm", CONV, "diff"),
    "convrnn": ("convrnn", CONV, "rgb+diff"),
}
FORMATS = ("onnx", "torchscript")


def needs(fmt: str) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")


def reload(path: Path, fmt: str) -> tuple[dict[str, Any], Callable[[torch.Tensor], np.ndarray]]:
    """The file alone, as a deployer without vidclf loads it: (its metadata, clips → logits)."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        meta = json.loads(session.get_modelmeta().custom_metadata_map["vidclf"])
        return meta, lambda x: session.run(None, {"clips": x.numpy()})[0]
    extra = {"vidclf.json": ""}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.load` is deprecated", FutureWarning)
        module = torch.jit.load(str(path), _extra_files=extra)
    return json.loads(extra["vidclf.json"]), lambda x: module(x).detach().numpy()


def tiny_classifier(arch: str = "convrnn") -> Classifier:
    name, config, mode = ARCHS[arch]
    torch.manual_seed(0)
    pre = Preprocess(num_frames=4, size=32, input=mode)
    model = build_model(name, len(CLASSES), in_channels=in_channels(mode), **config).eval()
    return Classifier(model, CLASSES, pre, Path("random-weights.pt"))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_exports_and_runs_from_the_file_alone(arch, fmt, tmp_path):
    needs(fmt)
    clf = tiny_classifier(arch)
    path = tmp_path / "out" / f"model.{fmt}"
    report = export_model(clf, fmt=fmt, output=path)
    assert report["max_abs_diff"] <= 1e-4, report
    assert report["format"] == fmt and report["path"] == str(path) and report["bytes"] == path.stat().st_size
    assert export.EXPORT_BATCH not in report["batch_sizes"], report
    assert list(path.parent.iterdir()) == [path], "one file: no external weights, no temporary left"

    meta, run = reload(path, fmt)
    assert meta["classes"] == CLASSES
    assert meta["preprocess"] == json.loads(json.dumps(asdict(clf.preprocess)))
    assert meta["input"]["shape"] == ["batch", 4, in_channels(clf.preprocess.input), 32, 32]
    clips = torch.randint(0, 256, (5, 4, 3, 32, 32), dtype=torch.uint8)  # a batch of neither 2 nor 3
    x = to_model_input(clips, torch.full((5,), 4), clf.preprocess)
    with torch.no_grad():
        expected = clf.model(x).numpy()
    np.testing.assert_allclose(run(x), expected, rtol=0, atol=1e-4)


def deployer_input(path: Path, p: dict[str, Any]) -> torch.Tensor:
    """The export module's recipe, followed with OpenCV and numpy only: (1, T, C, H, W) float32."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while (ok_frame := cap.read())[0]:
        frames.append(ok_frame[1])
    n, t = len(frames), p["num_frames"]
    assert p["sampling"] == "center"
    if n <= t:
        indices = list(range(n)) + [n - 1] * (t - n)
    else:
        stride = min(p["frame_stride"], (n - 1) // (t - 1))
        start = (n - ((t - 1) * stride + 1)) // 2
        indices = [start + k * stride for k in range(t)]
    rgb = [cv2.cvtColor(cv2.resize(frames[i], (p["size"], p["size"]), interpolation=cv2.INTER_LINEAR),
                        cv2.COLOR_BGR2RGB) for i in indices]
    x = np.stack(rgb).transpose(0, 3, 1, 2).astype(np.float32)  # (T, H, W, 3) → (T, 3, H, W)
    x = (x / 255 - np.array(p["mean"]).reshape(3, 1, 1)) / np.array(p["std"]).reshape(3, 1, 1)
    d = np.concatenate([np.zeros_like(x[:1]), x[1:] - x[:-1]])
    x = {"rgb": x, "diff": d, "rgb+diff": np.concatenate([x, d], axis=1)}[p["input"]]
    return torch.from_numpy(x[None].astype(np.float32))


@pytest.mark.parametrize("fmt", FORMATS)
def test_trained_checkpoint_on_real_clips(fmt, trained, synth_data, tmp_path):
    needs(fmt)
    clf = load_classifier(trained, device=torch.device("cpu"))
    videos = sorted(synth_data.rglob("*.mp4"))[::5][:3]
    path = tmp_path / f"model.{fmt}"
    report = export_model(clf, fmt=fmt, output=path, check_videos=videos)
    assert report["clips"] == 3 and report["max_abs_diff"] <= 1e-4, report

    meta, run = reload(path, fmt)
    assert meta["classes"] == clf.classes
    x = torch.cat([deployer_input(v, meta["preprocess"]) for v in videos])  # no vidclf code
    with torch.no_grad():
        expected = clf.model(export._check_input(clf, videos)).numpy()  # as vidclf predict decodes
    np.testing.assert_allclose(run(x), expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_export_that_does_not_match_pytorch_raises_and_leaves_no_file(fmt, monkeypatch, tmp_path):
    needs(fmt)
    reference = export._torch_logits
    monkeypatch.setattr(export, "_torch_logits", lambda model, x: reference(model, x) + 1.0)
    path = tmp_path / "out" / f"model.{fmt}"
    with pytest.raises(ExportError, match=r"differ from PyTorch's by up to 1 \(tolerance 0\.0001\)") as err:
        export_model(tiny_classifier(), fmt=fmt, output=path)
    assert "\n" not in str(err.value)
    assert list(path.parent.iterdir()) == []


def test_onnx_export_without_the_extra_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails
    with pytest.raises(ExportError, match=r"pip install 'vidclf\[export\]'") as err:
        export_model(tiny_classifier(), fmt="onnx", output=tmp_path / "out" / "model.onnx")
    assert "\n" not in str(err.value)
    assert list((tmp_path / "out").iterdir()) == []


def test_an_unknown_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match="onnx, torchscript"):
        export_model(tiny_classifier(), fmt="tflite", output=tmp_path / "model.tflite")


@pytest.mark.parametrize("fmt,name", [("onnx", "m.onnx"), ("torchscript", "m.pt")])
def test_export_command_checks_on_the_training_clips(trained, tmp_path, fmt, name):
    import json

    from tests.test_cli import invoke

    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    result = invoke("export", "--model", trained, "--format", fmt, "--output", tmp_path / name)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["clips"] == 3 and report["max_abs_diff"] <= 1e-4 and (tmp_path / name).stat().st_size > 0
    assert "differ from PyTorch's by at most" in result.stderr
