"""GPU paths: run with `pytest -m cuda` on a machine with CUDA; skipped cleanly elsewhere."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from vidclf.cli import app
from vidclf.models import MODELS, build_model

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("arch", list(MODELS))
def test_train_evaluate_predict_on_cuda_then_load_on_cpu(arch, synth_data, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--arch", arch, "--data", str(synth_data), "--epochs", "1", "--frames", "8",
                                 "--size", "32", "--batch-size", "4", "--device", "cuda", "--out", str(tmp_path),
                                 "--cache", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "bfloat16" in result.stderr or "float16" in result.stderr  # AMP on by default on CUDA
    (best,) = tmp_path.glob("*/best.pt")
    result = runner.invoke(app, ["evaluate", "--model", str(best), "--device", "cuda", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["num_clips"] > 0
    clip = str(next(synth_data.rglob("*.mp4")))
    on_gpu = runner.invoke(app, ["predict", clip, "--model", str(best), "--device", "cuda", "--precision", "32"])
    on_cpu = runner.invoke(app, ["predict", clip, "--model", str(best), "--device", "cpu"])
    assert on_gpu.exit_code == on_cpu.exit_code == 0, on_gpu.output + on_cpu.output
    gpu, cpu = json.loads(on_gpu.stdout), json.loads(on_cpu.stdout)
    assert gpu["label"] == cpu["label"] and abs(gpu["score"] - cpu["score"]) < 1e-3


@pytest.mark.parametrize("arch", list(MODELS))
def test_compiled_model_matches_eager_on_cuda(arch):
    """Inductor with CUDA graphs (what `--compile` uses on a GPU) against the eager model."""
    torch.manual_seed(0)
    model = build_model(arch, 5).cuda().eval()
    compiled = torch.compile(model, mode="reduce-overhead")
    x = torch.randn(4, 8, 3, 64, 64, device="cuda")
    with torch.no_grad():
        for lengths in ([8, 5, 1, 8], [2, 8, 8, 3], [8, 5, 1, 8]):
            lengths = torch.tensor(lengths, device="cuda")
            torch.compiler.cudagraph_mark_step_begin()
            torch.testing.assert_close(compiled(x, lengths), model(x, lengths), atol=1e-3, rtol=1e-3)


def test_train_with_compile_on_cuda(synth_data, tmp_path):
    result = CliRunner().invoke(app, ["train", "--arch", "convgru", "--data", str(synth_data), "--epochs", "2",
                                      "--frames", "8", "--size", "32", "--batch-size", "4", "--device", "cuda",
                                      "--compile", "--out", str(tmp_path), "--cache", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert list(tmp_path.glob("*/best.pt"))
