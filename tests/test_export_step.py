"""`export --step`: one recurrent step in a file that runs without vidclf, equal to `stream` over whole streams."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from tests.test_framestep import ARCHS, classifier, stream  # noqa: F401  (stream is a fixture)
from vidclf.export import ExportError
from vidclf.export_step import export_step
from vidclf.stream import stream_probs


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def reload(path, fmt: str):
    """The file alone, as a device loads it: (metadata, (frame, *state) numpy → [logits, *next state])."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        meta = json.loads(session.get_modelmeta().custom_metadata_map["vidclf"])
        names = [i["name"] for i in meta["step"]["inputs"]]
        return meta, lambda *values: session.run(None, dict(zip(names, values)))
    extra = {"vidclf.json": ""}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.load` is deprecated", FutureWarning)
        module = torch.jit.load(str(path), _extra_files=extra)
    return json.loads(extra["vidclf.json"]), lambda *values: [o.detach().numpy() for o in module(*map(torch.from_numpy, values))]


@pytest.mark.parametrize("fmt,arch", [("torchscript", "cnn-lstm"), ("torchscript", "convlstm"), ("onnx", "convgru")])
def test_the_exported_step_carries_a_stream_as_stream_does(stream, tmp_path, fmt, arch):  # noqa: F811
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    clf = classifier(*ARCHS[arch])
    path = tmp_path / "out" / f"step.{fmt}"
    frames = np.stack([f for _, f in stream])
    report = export_step(clf, fmt=fmt, output=path, check_streams=[frames[:20], frames[20:]])
    assert report["max_abs_diff"] <= 1e-4 and report["batch_sizes"] == [1, 3] and list(path.parent.iterdir()) == [path]
    meta, run = reload(path, fmt)
    state = [np.zeros([1, *s["shape"][1:]], dtype=s["dtype"]) for s in meta["step"]["inputs"][1:]]  # zeros start it
    probs = []
    for _, frame in stream:
        logits, *state = run(frame.transpose(2, 0, 1)[None].copy(), *state)
        probs.append(torch.from_numpy(logits[0]).softmax(dim=0))
    expected = torch.stack([p for _, p in stream_probs(clf, stream, device=torch.device("cpu"), hop_frames=1)])
    assert (torch.stack(probs) - expected).abs().max() <= 1e-5
    assert meta["classes"] == clf.classes and meta["preprocess"]["input"] == "rgb+diff"


def test_models_without_a_step_are_refused(tmp_path):
    clf = classifier("cnn-lstm", {**ARCHS["cnn-lstm"][1], "bidirectional": True})
    with pytest.raises(ExportError, match="cannot read a stream frame by frame"):
        export_step(clf, fmt="torchscript", output=tmp_path / "out" / "step.pt")
    assert not (tmp_path / "out").exists()
