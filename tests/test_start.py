"""Where a run's weights start: --init from a vidclf checkpoint (other classes allowed, the head new),
the errors for another architecture or input, frozen parts that stay bit for bit, a smaller rate for the
body, and checkpoints that say where they started."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from vidclf.checkpoint import load_classifier
from vidclf.cli import app
from vidclf.errors import CheckpointError
from vidclf.start import apply_init, param_groups, resolve

quiet = Console(stderr=True, quiet=True)


@pytest.fixture(scope="module")
def two_classes(synth_data, tmp_path_factory) -> Path:
    """A dataset of other classes: two of synth_data's, renamed."""
    root = tmp_path_factory.mktemp("other") / "data"
    for i, folder in enumerate(sorted(p for p in synth_data.iterdir() if p.is_dir())[:2]):
        shutil.copytree(folder, root / f"new{i}")
    return root


def _train(*args) -> str:
    result = CliRunner().invoke(app, ["train", "--epochs", "1", "--workers", "0", "--no-cache", "--device", "cpu",
                                      "--batch-size", "4", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


def test_init_across_class_sets_keeps_the_body_and_makes_a_new_head(trained):
    from vidclf.models import build_model

    saved = torch.load(trained, weights_only=True)
    spec = saved["model"]
    model = build_model(spec["name"], 2, **spec["config"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    message = apply_init(model, trained, ["a", "b"])
    assert "new head for 2 classes" in message and str(trained) in message
    for key, value in model.state_dict().items():
        if key.startswith("head."):
            assert value.shape[0] == 2 and torch.equal(value, before[key]), key  # new: as built
        else:
            assert torch.equal(value, saved["state_dict"][key]), key
    same = build_model(spec["name"], len(saved["classes"]), **spec["config"])
    assert "head kept" in apply_init(same, trained, saved["classes"])
    assert torch.equal(same.head.weight, saved["state_dict"]["head.weight"])


def test_init_takes_the_checkpoints_architecture_and_input_and_refuses_others(trained):
    saved = torch.load(trained, weights_only=True)
    shape = resolve(arch=None, model={}, init=str(trained), num_frames=None, size=None, input=None, say=print)
    assert (shape.arch, shape.num_frames, shape.size, shape.input) == (
        "cnn-lstm", saved["preprocess"]["num_frames"], saved["preprocess"]["size"], saved["preprocess"]["input"])
    assert shape.model["hidden_size"] == saved["model"]["config"]["hidden_size"]
    with pytest.raises(CheckpointError, match="trained with --arch cnn-lstm"):
        resolve(arch="convgru", model={}, init=str(trained), num_frames=None, size=None, input=None, say=print)
    with pytest.raises(CheckpointError, match="--input rgb\\+diff"):
        resolve(arch=None, model={}, init=str(trained), num_frames=None, size=None, input="rgb", say=print)
    with pytest.raises(CheckpointError, match="hidden_size=128"):
        resolve(arch=None, model={"hidden_size": 64}, init=str(trained), num_frames=None, size=None, input=None, say=print)
    with pytest.raises(ValueError, match="--init or --pretrained"):
        resolve(arch=None, model={"pretrained": "imagenet"}, init=str(trained), num_frames=None, size=None, input=None,
                say=print)


def test_cli_init_on_other_classes_records_where_it_started(trained, two_classes, tmp_path):
    out = _train("--data", two_classes, "--init", trained, "--out", tmp_path)
    assert "new head for 2 classes" in out
    best = next(tmp_path.rglob("best.pt"))
    saved = torch.load(best, weights_only=True)
    assert saved["start"] == {"init": str(trained), "pretrained": None} and saved["classes"] == ["new0", "new1"]
    summary = CliRunner().invoke(app, ["summary", "--model", str(best)])
    assert summary.exit_code == 0 and f"started from the checkpoint {trained} (--init)" in " ".join(summary.output.split())


@pytest.mark.parametrize("arch", ["cnn-lstm", "convgru"])
def test_frozen_backbone_keeps_weights_and_batchnorm_statistics_bit_for_bit(arch, synth_data, two_classes, tmp_path):
    first = tmp_path / "first"
    _train("--data", synth_data, "--arch", arch, "--frames", 4, "--size", 32, "--out", first, "--name", "a")
    init = first / "a" / "best.pt"
    _train("--data", two_classes, "--init", init, "--freeze-backbone", "--out", tmp_path, "--name", "b")
    before, after = (torch.load(p, weights_only=True)["state_dict"] for p in (init, tmp_path / "b" / "last.pt"))
    frozen = [k for k in after if not k.startswith("head.") and (arch != "cnn-lstm" or k.startswith("backbone."))]
    assert any("running_mean" in k for k in frozen)  # BatchNorm statistics are among them
    for key in frozen:
        assert torch.equal(before[key], after[key]), key
    from vidclf.models import build_model

    saved = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    torch.manual_seed(saved["train_config"]["seed"])  # as the run built its network: the new head's start
    start = build_model(arch, 2, **{**saved["model"]["config"], "pretrained": None}).state_dict()
    assert not torch.equal(start["head.weight"], after["head.weight"])  # the head trained


def test_backbone_lr_puts_the_body_at_a_fraction_of_the_heads_rate():
    from vidclf.models import build_model

    model = build_model("convgru", 3)
    groups = param_groups(model, lr=1e-3, backbone_lr=0.1)
    assert [g["lr"] for g in groups] == [1e-3, 1e-4]
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.head.parameters()}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert len(param_groups(model, lr=1e-3, backbone_lr=1.0)) == 1  # as older runs were saved


def test_a_checkpoint_never_fetches_its_pretrained_weights_again(trained, tmp_path):
    """The state_dict holds the weights: rebuilding for predict must not download (or need the file)."""
    saved = torch.load(trained, weights_only=True)
    saved["model"]["config"] = {**saved["model"]["config"], "backbone": "resnet18", "pretrained": str(tmp_path / "gone.pt")}
    from vidclf.models import build_model

    net = build_model("cnn-lstm", len(saved["classes"]), **{**saved["model"]["config"], "pretrained": None})
    saved["state_dict"] = net.state_dict()
    torch.save(saved, tmp_path / "moved.pt")
    clf = load_classifier(tmp_path / "moved.pt", device=torch.device("cpu"))
    assert clf.model.config.pretrained is None


def test_pretrained_weights_set_the_default_frames_and_say_when_options_differ():
    from torchvision.models.video import R3D_18_Weights

    said = []
    shape = resolve(arch="r3d_18", model={"pretrained": "kinetics400"}, init=None, num_frames=None, size=None,
                    input=None, say=said.append)
    transforms = R3D_18_Weights.KINETICS400_V1.transforms()
    assert (shape.num_frames, shape.size) == (16, transforms.crop_size[0]) and not said
    assert (list(shape.mean), list(shape.std)) == (list(transforms.mean), list(transforms.std))
    shape = resolve(arch="r3d_18", model={"pretrained": "kinetics400"}, init=None, num_frames=8, size=64, input=None,
                    say=said.append)
    assert (shape.num_frames, shape.size) == (8, 64)
    assert len(said) == 1 and "(kinetics400) were trained on frames of 112×112; --size 64" in said[0]
    s3d = resolve(arch="s3d", model={"pretrained": "kinetics400"}, init=None, num_frames=None, size=None, input=None,
                  say=said.append)
    assert (s3d.num_frames, s3d.size) == (16, 224)  # not the 128 frames its weights were scored on
    with pytest.raises(ValueError, match="mvit_v2_s takes 16 frames of 224×224; got --frames 8"):
        resolve(arch="mvit_v2_s", model={}, init=None, num_frames=8, size=None, input=None, say=said.append)
    plain = resolve(arch="r3d_18", model={}, init=None, num_frames=None, size=None, input=None, say=said.append)
    assert (plain.num_frames, plain.size, plain.mean) == (16, 64, None)  # from scratch: vidclf's defaults
