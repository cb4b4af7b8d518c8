"""Every architecture in the registry: shapes, lengths, exact cell equations, options and errors."""

from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F

from vidclf.models import MODELS, build_model, model_options
from vidclf.models.conv_recurrent import ConvGRUCell, ConvLSTMCell, ConvRNNCell, ConvRecurrentLayer
from vidclf.models.video_nets import FIXED, PARTS

# torchvision's video networks run here at 6 frames, not their default 16, to keep these tests cheap: what
# they check is how clips reach a network (resampled by their lengths), the same code for all six. mvit_v2_s
# takes only 16 frames of 224² (~60× the work of these 32² clips), so it runs in tests/test_video_models.py.
# mc3_18 and r2plus1d_18 are r3d_18's class (torchvision's VideoResNet) with other blocks, so r3d_18 stands
# for them here; their parity with torchvision is checked in tests/test_video_models.py too.
OPTIONS = {name: {"frames": 6} for name in PARTS}  # 6: the fewest s3d takes
NAMES = [name for name in MODELS if name not in (*FIXED, "mc3_18", "r2plus1d_18")]

VARIANTS = [(name, OPTIONS.get(name, {})) for name in NAMES] + [
    ("cnn-lstm", {"rnn": "gru", "num_layers": 2, "dropout": 0.1}),
    ("cnn-lstm", {"rnn": "rnn", "bidirectional": True}),
    ("cnn-lstm", {"bidirectional": True, "num_layers": 2, "motion_features": False}),
    ("convgru", {"hidden_channels": (8, 12, 16), "kernel_sizes": (3, 5, 1)}),
    ("convlstm", {"pool": "avgmax"}),
]


@pytest.mark.parametrize("name,options", VARIANTS)
def test_forward_backward_shapes(name, options):
    torch.manual_seed(0)
    model = build_model(name, 5, **options)
    x = torch.randn(3, 6, 3, 32, 32)
    logits = model(x, torch.tensor([6, 4, 1]))
    assert logits.shape == (3, 5) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert model.forward_head(model.forward_features(x, torch.tensor([6, 4, 1]))).shape == (3, 5)


@pytest.mark.parametrize("name", NAMES)
def test_six_input_channels(name):
    model = build_model(name, 4, in_channels=6, **OPTIONS.get(name, {}))
    assert model(torch.randn(2, 4, 6, 32, 32), torch.tensor([4, 2])).shape == (2, 4)


@pytest.mark.parametrize("name,options", VARIANTS)
def test_without_lengths_every_clip_is_full_length(name, options):
    """`model(x)` works like any torchvision model: the same as lengths of T for every clip."""
    torch.manual_seed(0)
    model = build_model(name, 5, **options).eval()
    x = torch.randn(2, 4, 3, 32, 32)
    assert torch.allclose(model(x), model(x, torch.tensor([4, 4])), atol=1e-6)
    assert not torch.equal(model(x), model(x, torch.tensor([2, 2])))  # lengths, when given, still count


@pytest.mark.parametrize("name,options", VARIANTS)
def test_padding_never_changes_the_logits(name, options):
    torch.manual_seed(0)
    model = build_model(name, 5, **options).eval()
    clip = torch.randn(1, 5, 3, 32, 32)
    padded = torch.cat([clip, 100 * torch.randn(1, 3, 3, 32, 32)], dim=1)  # garbage after the end
    alone = model(clip, torch.tensor([5]))
    batch = model(torch.cat([padded, torch.randn(1, 8, 3, 32, 32)]), torch.tensor([5, 8]))
    assert torch.allclose(alone[0], batch[0], atol=1e-5)


# Compiling a video network costs 5-20 s on 2 cores, so r3d_18 stands for the six: what is compiled of
# the adapter (the gather that resamples frames by lengths) is the same for all of them.
@pytest.mark.parametrize("name,options", [v for v in VARIANTS if v[0] not in ("s3d", "swin3d_t")])
def test_compiled_model_matches_eager_and_new_lengths_do_not_recompile(name, options):
    """Lengths select the state (or, for the video networks, the frames) by gather, never by shape: one
    compiled graph serves every batch.

    aot_eager traces as inductor does without a C++ compiler; inductor's numerics are checked on CUDA.
    """
    torch.manual_seed(0)
    model = build_model(name, 3, **options).eval()
    compiled = torch.compile(model, backend="aot_eager")
    x = torch.randn(2, 4, 3, 32, 32)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True), torch.no_grad():
        for lengths in ([4, 2], [1, 3], [4, 4]):
            lengths = torch.tensor(lengths)
            torch.testing.assert_close(compiled(x, lengths), model(x, lengths), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_rebuilds_from_its_config(name):
    model = build_model(name, 3)
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(model.config).items()}
    again = build_model(name, 3, **config)  # lists, as a checkpoint may hand them back
    assert again.state_dict().keys() == model.state_dict().keys()
    assert all(a.shape == b.shape for a, b in zip(again.state_dict().values(), model.state_dict().values()))


@pytest.mark.parametrize("name", NAMES)
def test_freeze_backbone_keeps_weights_and_batchnorm_statistics_bit_for_bit(name):
    """Frozen: everything but the head (the CNN+LSTM: its CNN only, the recurrent layer still learns)."""
    torch.manual_seed(0)
    model = build_model(name, 3, freeze_backbone=True, **OPTIONS.get(name, {}))
    frozen_prefix = "backbone." if name == "cnn-lstm" else ""
    frozen = {k: v.clone() for k, v in model.state_dict().items()
              if k.startswith(frozen_prefix) and not k.startswith("head.")}
    assert any("running_mean" in k for k in frozen) or name == "swin3d_t"  # BatchNorm statistics are among them
    buffers = {k for k, _ in model.named_buffers()}
    assert {k for k, p in model.named_parameters() if not p.requires_grad} == frozen.keys() - buffers
    head = model.head.weight.clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)  # as training hands them all over
    x, lengths, y = torch.randn(2, 6, 3, 32, 32), torch.tensor([6, 4]), torch.tensor([0, 2])
    model.train()
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(model(x, lengths), y).backward()
        optimizer.step()
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in frozen.items())
    assert not torch.equal(model.head.weight, head)


def test_registry_errors_name_the_choices():
    with pytest.raises(ValueError, match="unknown architecture 'x3d'; choose one of cnn-lstm, convgru"):
        build_model("x3d", 3)
    with pytest.raises(ValueError, match="convgru has no option rnn; its options are"):
        build_model("convgru", 3, rnn="gru")
    with pytest.raises(ValueError, match="backbone should be one of"):
        build_model("cnn-lstm", 3, backbone="vgg")
    assert build_model("convgru", 3, dropout=None).config.dropout == 0.0  # None keeps the default
    options = {name: (kind, default) for name, kind, default, _ in model_options("cnn-lstm")}
    assert options["hidden_size"] == ("int", 128) and options["rnn"] == ("str", "lstm")


# Plain, step-by-step implementations of the equations, with separate W and U convolutions
# sliced out of the cell's fused weights: any optimisation of the cells must agree with these.
def _conv(x, w, b=None):
    return F.conv2d(x, w, b, padding=w.shape[-1] // 2)


def _reference_gru(cell, xs):
    H = cell.hidden
    W, b, U_zr, Uh = cell.input_conv.weight, cell.input_conv.bias, cell.hidden_zr.weight, cell.hidden_h.weight
    Wz, Wr, Wh = W[:H], W[H : 2 * H], W[2 * H :]
    bz, br, bh = b[:H], b[H : 2 * H], b[2 * H :]
    Uz, Ur = U_zr[:H], U_zr[H:]
    h = torch.zeros(xs.shape[0], H, *xs.shape[-2:])
    out = []
    for t in range(xs.shape[1]):
        x = xs[:, t]
        z = torch.sigmoid(_conv(x, Wz, bz) + _conv(h, Uz))
        r = torch.sigmoid(_conv(x, Wr, br) + _conv(h, Ur))
        h = z * h + (1 - z) * torch.tanh(_conv(x, Wh, bh) + _conv(r * h, Uh))
        out.append(h)
    return torch.stack(out, 1)


def _reference_lstm(cell, xs):
    H = cell.hidden
    W, b, U = cell.input_conv.weight, cell.input_conv.bias, cell.hidden_conv.weight
    h = torch.zeros(xs.shape[0], H, *xs.shape[-2:])
    c = torch.zeros_like(h)
    out = []
    for t in range(xs.shape[1]):
        x = xs[:, t]
        gate = [_conv(x, W[k * H : (k + 1) * H], b[k * H : (k + 1) * H]) + _conv(h, U[k * H : (k + 1) * H])
                for k in range(4)]
        i, f, o, g = torch.sigmoid(gate[0]), torch.sigmoid(gate[1]), torch.sigmoid(gate[2]), torch.tanh(gate[3])
        c = f * c + i * g
        h = o * torch.tanh(c)
        out.append(h)
    return torch.stack(out, 1)


def _reference_rnn(cell, xs):
    h = torch.zeros(xs.shape[0], cell.hidden, *xs.shape[-2:])
    out = []
    for t in range(xs.shape[1]):
        h = torch.tanh(_conv(xs[:, t], cell.input_conv.weight, cell.input_conv.bias) + _conv(h, cell.hidden_conv.weight))
        out.append(h)
    return torch.stack(out, 1)


@pytest.mark.parametrize("cell_class,reference", [(ConvGRUCell, _reference_gru), (ConvLSTMCell, _reference_lstm),
                                                  (ConvRNNCell, _reference_rnn)])
def test_cells_match_their_equations_over_a_two_layer_stack(cell_class, reference):
    torch.manual_seed(0)
    layers = [ConvRecurrentLayer(cell_class(4, 6, 3)), ConvRecurrentLayer(cell_class(6, 5, 5))]
    xs = torch.randn(2, 7, 4, 9, 11)
    with torch.no_grad():
        ours, ref = xs, xs
        for layer in layers:
            ours, ref = layer(ours), reference(layer.cell, ref)
    assert ours.shape == (2, 7, 5, 9, 11)
    assert (ours - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("cell_class", [ConvGRUCell, ConvLSTMCell, ConvRNNCell])
def test_initial_state_follows_the_input(cell_class):
    cell = cell_class(3, 4, 3).to(torch.float64)
    gx = torch.zeros(2, cell.gates * 4, 5, 6, dtype=torch.float64)
    state = cell.initial_state(gx)
    h = state[0] if isinstance(state, tuple) else state
    assert h.shape == (2, 4, 5, 6) and h.dtype == torch.float64 and not h.any()


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v3_small"])
def test_torchvision_backbones_and_local_pretrained_weights(backbone, tmp_path):
    from torchvision import models

    weights = tmp_path / f"{backbone}.pt"
    reference = getattr(models, backbone)(weights=None)
    torch.save(reference.state_dict(), weights)
    model = build_model("cnn-lstm", 3, backbone=backbone, pretrained=str(weights), freeze_backbone=True)
    first_conv = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    ref_conv = next(m for m in reference.modules() if isinstance(m, torch.nn.Conv2d))
    assert torch.equal(first_conv.weight, ref_conv.weight)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert model(torch.randn(1, 2, 3, 64, 64), torch.tensor([2])).shape == (1, 3)
    model.train()  # a frozen backbone keeps its BatchNorm statistics too
    assert not model.backbone.training and model.rnn.training


def test_pretrained_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="small backbone has no pretrained weights"):
        build_model("cnn-lstm", 3, pretrained="imagenet")
    with pytest.raises(ValueError, match="missing.pt: could not load pretrained weights"):
        build_model("cnn-lstm", 3, backbone="resnet18", pretrained=str(tmp_path / "missing.pt"))
    other = tmp_path / "mobilenet.pt"
    from torchvision import models

    torch.save(models.mobilenet_v3_small(weights=None).state_dict(), other)
    with pytest.raises(ValueError, match=r"not a torchvision resnet18 state_dict \(\d+ keys missing, e\.g\. conv1\.weight; "
                                         r"\d+ unexpected, e\.g\. features\.0\.0\.weight\)$"):
        build_model("cnn-lstm", 3, backbone="resnet18", pretrained=str(other))


def test_imagenet_weights_without_network_fail_clearly(monkeypatch):
    import torch.hub

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(ValueError, match="could not fetch torchvision's ImageNet weights for resnet18.*--pretrained FILE"):
        build_model("cnn-lstm", 3, backbone="resnet18", pretrained="imagenet")


@pytest.mark.parametrize("pool", ["max", "avgmax"])
def test_pooling_of_the_final_state_map(pool):
    """avg, max and avgmax pool the same state map: its mean, its maximum per channel, or both."""
    torch.manual_seed(0)
    avg = build_model("convgru", 3).eval()
    other = build_model("convgru", 3, pool=pool).eval()
    other.load_state_dict({k: v for k, v in avg.state_dict().items() if not k.startswith("head.")}, strict=False)
    x, lengths = torch.randn(2, 4, 3, 32, 32), torch.tensor([4, 3])
    gx = avg.frame_features(x)
    seq = avg.layers[1](avg.layers[0].recur(gx))
    last = torch.stack([seq[0, 3], seq[1, 2]])  # each clip's state at its last frame
    expected = {"max": [last.amax(dim=(2, 3))], "avgmax": [last.mean(dim=(2, 3)), last.amax(dim=(2, 3))]}[pool]
    assert torch.allclose(avg.forward_features(x, lengths), last.mean(dim=(2, 3)), atol=1e-6)
    assert torch.allclose(other.forward_features(x, lengths), torch.cat(expected, dim=1), atol=1e-6)
    with pytest.raises(ValueError, match="avg, max, avgmax"):
        build_model("convgru", 3, pool="median")
