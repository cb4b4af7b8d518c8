"""torchvision's Kinetics-400 networks as vidclf architectures: torchvision's own logits from the same weights,
the widened first conv, the preprocessing the weights expect, the (mocked) download, resampling, the shape
MViT fixes, and the registry. Lengths, padding, freezing and compiling are checked with every architecture in
tests/test_models.py. No test downloads anything: the weights are seeded torchvision models saved to files.
"""

import urllib.error
from dataclasses import asdict

import pytest
import torch
from torchvision.models import get_model_weights, video

from vidclf.models import MODELS, build_model, model_options, weights_preprocess
from vidclf.models.video_nets import FIXED, PARTS, VideoNetConfig, resample
from vidclf.preprocess import Preprocess, channels_first, to_model_input

ARCHS = ["r3d_18", "mc3_18", "r2plus1d_18", "s3d", "mvit_v2_s", "swin3d_t"]
# (frames, size) of the parity input. The smallest torchvision itself runs, except s3d: its own 2×7×7 pool
# runs from 224² and is the global mean vidclf uses only at 16 frames of 224² (see video_nets.py). MViT takes
# only 16 frames of 224².
SHAPES = {"s3d": (16, 224), "mvit_v2_s": (16, 224)}


def _classifier(net: torch.nn.Module, arch: str) -> torch.nn.Module:
    """torchvision's last Linear or 1×1×1 Conv3d: the map vidclf's head takes over."""
    maps = [m for m in net.get_submodule(PARTS[arch][1]).modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv3d))]
    return maps[-1]


@pytest.fixture(scope="module", params=ARCHS)
def reference(request, tmp_path_factory):
    """(arch, torchvision's network with seeded weights and BatchNorm statistics, its state_dict file)."""
    arch = request.param
    torch.manual_seed(0)
    net = getattr(video, arch)(weights=None).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):  # not the 0/1 of a fresh layer
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("weights") / f"{arch}.pt"
    torch.save(net.state_dict(), path)
    return arch, net, path


def _copy_head(model: torch.nn.Module, net: torch.nn.Module, arch: str) -> torch.nn.Module:
    last = _classifier(net, arch)
    with torch.no_grad():  # s3d's (400, 1024, 1, 1, 1) conv is a Linear on the pooled vector
        model.head.weight.copy_(last.weight.flatten(1))
        model.head.bias.copy_(last.bias)
    return model


@pytest.fixture(scope="module")
def wide(reference):
    """Ours from the reference's file for rgb+diff's 6 channels, frozen, torchvision's classifier as its head."""
    arch, net, path = reference
    frames, _ = SHAPES.get(arch, (8, 32))
    model = build_model(arch, 400, pretrained=str(path), frames=frames, in_channels=6, freeze_backbone=True)
    return _copy_head(model, net, arch).eval()


def test_pretrained_file_gives_torchvisions_logits_and_the_widened_stem_keeps_them(reference, wide):
    arch, net, path = reference
    frames, size = SHAPES.get(arch, (8, 32))
    torch.manual_seed(1)
    x = torch.randn(1, frames, 3, size, size)  # (B, T, C, H, W)
    with torch.no_grad():
        expected = net(x.transpose(1, 2))  # torchvision's (B, C, T, H, W)
        if arch not in FIXED:  # MViT's forward costs ~5 s: its 6-channel check below covers the loading too
            ours = _copy_head(build_model(arch, 400, pretrained=str(path), frames=frames).eval(), net, arch)
            torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-4)
        # rgb+diff's 6 channels: RGB filters spread over both halves (each at half weight), so input whose
        # second half repeats the RGB channels gives the 3-channel network's output.
        torch.testing.assert_close(wide(torch.cat([x, x], dim=2)), expected, atol=1e-5, rtol=1e-4)
    stem = wide.body.get_submodule(PARTS[arch][0])
    assert stem.in_channels == 6 and torch.equal(stem.weight[:, 3:], stem.weight[:, :3])


def test_kinetics400_downloads_torchvisions_own_weights(reference, monkeypatch):
    arch, net, path = reference
    asked = []

    def download(url, **kwargs):
        asked.append((url, kwargs.get("check_hash")))
        return torch.load(path, weights_only=True)

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", download)
    model = build_model(arch, 3, pretrained="kinetics400")
    url = get_model_weights(arch).KINETICS400_V1.url
    assert asked == [(url, True)] and url.startswith("https://download.pytorch.org/models/")
    skip = (PARTS[arch][1] + ".",)
    expected = {k: v for k, v in net.state_dict().items() if not k.startswith(skip)}
    body = model.body.state_dict()
    assert body.keys() == expected.keys() and all(torch.equal(body[k], v) for k, v in expected.items())
    assert model.head.out_features == 3  # always new: the dataset's classes


def test_kinetics400_offline_says_where_to_get_the_file_in_one_line(monkeypatch):
    def offline(url, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(ValueError) as err:
        build_model("mc3_18", 3, pretrained="kinetics400")
    message = str(err.value)
    assert "\n" not in message and "Kinetics-400 weights for mc3_18" in message and "name resolution" in message
    assert get_model_weights("mc3_18").KINETICS400_V1.url in message and message.endswith("--pretrained FILE")


def test_a_file_of_another_architecture_is_a_clear_error(tmp_path):
    r3d, swin = tmp_path / "r3d.pt", tmp_path / "swin.pt"
    torch.save(video.r3d_18().state_dict(), r3d)
    torch.save({"layer": torch.zeros(1)}, swin)
    with pytest.raises(ValueError, match=r"r3d.pt: not a torchvision mc3_18 state_dict \(\d+ of another shape, e\.g\. "
                                         r"layer2\.0\.conv1\.0\.weight \(128, 64, 3, 3, 3\) for \(128, 64, 1, 3, 3\)\)$"):
        build_model("mc3_18", 3, pretrained=str(r3d))
    with pytest.raises(ValueError, match=r"not a torchvision r2plus1d_18 state_dict \(\d+ keys missing, e\.g\. "
                                         r"stem\.0\.weight; 1 unexpected, e\.g\. layer\)$"):
        build_model("r2plus1d_18", 3, pretrained=str(swin))
    with pytest.raises(ValueError, match="gone.pt: could not load pretrained weights"):
        build_model("r3d_18", 3, pretrained=str(tmp_path / "gone.pt"))


@pytest.mark.parametrize("arch", ARCHS)
def test_weights_preprocess_normalises_as_the_weights_transforms_do(arch):
    """Our mean, std and size on the transforms' centre crop give the tensor `weights.transforms()` gives.

    The frames are the size the transforms resize to (their shorter side: 128×171 or 256×256), so the
    resize is a no-op. vidclf itself squashes whole frames to size×size where torchvision resizes the
    shorter side and crops the centre: the same pixels only for frames already cropped like this.
    """
    from torchvision.transforms.v2.functional import center_crop

    weights = get_model_weights(arch).KINETICS400_V1
    transforms = weights.transforms()
    wanted = weights_preprocess(arch, "kinetics400")
    h, w = (transforms.resize_size * 2)[:2]  # [128, 171], or [256] for the shorter side
    frames = torch.randint(0, 256, (3, 3, h, w), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    expected = transforms(frames)  # (T, C, H, W) uint8 → float (C, T, crop, crop)
    crop = center_crop(frames, [wanted.size, wanted.size])  # (T, 3, size, size)
    pre = Preprocess(num_frames=3, size=wanted.size, mean=wanted.mean, std=wanted.std, input="rgb")
    ours = to_model_input(channels_first(crop.permute(0, 2, 3, 1)[None]), torch.tensor([3]), pre)  # (1, T, C, H, W)
    assert ours.shape[-1] == transforms.crop_size[0] and expected.shape[-1] == wanted.size
    torch.testing.assert_close(ours[0].transpose(0, 1), expected, atol=1e-6, rtol=1e-6)
    assert weights_preprocess(arch, "/any/torchvision/state_dict.pt") == wanted  # a file: the same transforms
    assert wanted.frames == (16 if arch in ("r3d_18", "mc3_18", "r2plus1d_18", "mvit_v2_s") else
                             {"s3d": 128, "swin3d_t": 32}[arch])  # the clip_len of the weights' meta
    assert wanted.fixed == (arch in FIXED)
    assert weights_preprocess(arch, None) == (wanted if arch in FIXED else None)  # MViT's shape binds without weights


def test_no_weights_preprocess_for_the_recurrent_architectures():
    assert all(weights_preprocess(name, "imagenet") is None for name in MODELS if name not in PARTS)


def test_resample_takes_each_slots_centre_frame_of_the_real_ones():
    x = torch.arange(8.0).view(1, 8, 1, 1, 1).repeat(3, 1, 1, 1, 1)  # frame t holds the value t
    got = resample(x, torch.tensor([8, 3, 5]), 4)[..., 0, 0, 0]
    assert got.tolist() == [[1, 3, 5, 7], [0, 1, 1, 2], [0, 1, 3, 4]]  # ⌊(2k+1)·L / 8⌋
    assert resample(x, torch.tensor([4, 4, 4]), 8)[0, :, 0, 0, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert resample(x, None, 8) is x  # the run's T: untouched
    assert torch.equal(resample(x, None, 3), resample(x, torch.tensor([8, 8, 8]), 3))


def test_only_mvit_fixes_its_shape_and_says_so(reference, wide):
    arch = reference[0]
    if arch not in FIXED:  # the others run on small frames too (s3d: its pool made a global mean)
        with torch.no_grad():
            assert wide(torch.zeros(1, 4, 6, 32, 32)).shape == (1, 400)
        return
    with pytest.raises(ValueError, match="mvit_v2_s takes exactly 16 frames .*got frames=8"):
        build_model(arch, 3, frames=8)
    with pytest.raises(ValueError, match="mvit_v2_s takes frames of exactly 224×224 .*got 112×112"):
        wide(torch.zeros(1, 16, 6, 112, 112))


def test_s3d_says_how_many_frames_it_needs():
    with pytest.raises(ValueError, match="s3d needs at least 6 frames, got frames=5"):
        build_model("s3d", 3, frames=5)  # 5 would crash the process in training (see MIN_FRAMES)


def test_the_registry_rebuilds_each_from_its_config(reference, wide):
    """The six under torchvision's names, five options each; the config alone rebuilds the weights."""
    arch = reference[0]
    assert MODELS[arch][0] is VideoNetConfig
    assert [o[0] for o in model_options(arch)] == ["in_channels", "pretrained", "freeze_backbone", "dropout", "frames"]
    again = build_model(arch, 400, **asdict(wide.config))
    assert again.config == wide.config
    state, rebuilt = wide.state_dict(), again.state_dict()
    assert state.keys() == rebuilt.keys()
    assert all(torch.equal(rebuilt[k], v) for k, v in state.items() if not k.startswith("head."))
    assert not any(p.requires_grad for p in again.body.parameters()) and again.head.weight.requires_grad
    again.train()  # frozen: the network stays in eval mode (BatchNorm statistics, stochastic depth)
    assert not again.body.training and again.head.training
