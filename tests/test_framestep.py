"""Recurrent models on streams: a carried state gives what the whole sequence at once gives, never
grows, and resets to a fresh stream; checkpoints not trained for streams keep their windows."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from vidclf.checkpoint import Classifier
from vidclf.framestep import FrameStep, Stepper
from vidclf.models import build_model, can_step
from vidclf.models.video_nets import VideoNet
from vidclf.preprocess import Preprocess, in_channels, to_model_input
from vidclf.stream import stepwise_default, stream_probs, stream_records

SIZE, CLASSES, FRAMES = 32, 4, 40
SMALL_LSTM = {"feature_size": 16, "hidden_size": 8}
SMALL_CONV = {"stem_channels": 8, "hidden_channels": (8, 8)}  # two layers: the deeper state is carried too
ARCHS = {"cnn-lstm": ("cnn-lstm", SMALL_LSTM),
         "cnn-gru-2-layers-no-motion": ("cnn-lstm", {**SMALL_LSTM, "rnn": "gru", "num_layers": 2, "motion_features": False}),
         "cnn-rnn": ("cnn-lstm", {**SMALL_LSTM, "rnn": "rnn"}),
         "convgru": ("convgru", SMALL_CONV), "convlstm": ("convlstm", SMALL_CONV), "convrnn": ("convrnn", SMALL_CONV)}
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def stream() -> list[tuple[float, np.ndarray]]:
    """A bright square moving over noise, then turning back: differences far from zero."""
    rng = np.random.default_rng(0)
    video = rng.integers(0, 120, (FRAMES, SIZE, SIZE, 3), dtype=np.uint8)
    for t in range(FRAMES):
        x = t if t < 20 else 40 - t
        video[t, 8:20, x % 20 : x % 20 + 12] = 255
    return [(t / 25, frame) for t, frame in enumerate(video)]


def classifier(name: str, options: dict, input_mode: str = "rgb+diff", size: int = SIZE, online: bool = True) -> Classifier:
    torch.manual_seed(0)
    pre = Preprocess(num_frames=4, size=size, input=input_mode)
    model = build_model(name, CLASSES, in_channels=in_channels(input_mode), **options).eval()
    return Classifier(model, [f"c{i}" for i in range(CLASSES)], pre, Path("random-weights"), online=online)


def whole_sequence_logits(clf: Classifier, frames: list[tuple[float, np.ndarray]]) -> torch.Tensor:
    """(N, classes): the whole stream as one clip through `forward_steps` from the zero state."""
    video = torch.from_numpy(np.stack([f for _, f in frames])).permute(0, 3, 1, 2)[None]  # (1, N, 3, H, W)
    with torch.no_grad():
        x = to_model_input(video, torch.tensor([video.shape[1]]), clf.preprocess)
        return clf.model.forward_steps(x, clf.model.initial_state(x[:, 0]))[0][0]


def stepped_logits(clf: Classifier, frames: list[tuple[float, np.ndarray]]) -> torch.Tensor:
    stepper = Stepper(clf.model, clf.preprocess, CPU, None)
    out = []
    for index, (_, frame) in enumerate(frames):
        stepper.add(index, frame)
        out.append(stepper.logits(index))
    return torch.stack(out)


@pytest.mark.parametrize("input_mode", ["rgb", "diff", "rgb+diff"])
@pytest.mark.parametrize("name,options", ARCHS.values(), ids=ARCHS.keys())
def test_a_carried_state_equals_the_whole_sequence_at_once(stream, name, options, input_mode):
    clf = classifier(name, options, input_mode)
    whole = whole_sequence_logits(clf, stream)
    assert (stepped_logits(clf, stream) - whole).abs().max() <= 1e-5
    # and the step's logits after T frames are what the clip classifier gives those T frames
    video = torch.from_numpy(np.stack([f for _, f in stream[:8]])).permute(0, 3, 1, 2)[None]
    with torch.no_grad():
        clip = clf.model(to_model_input(video, torch.tensor([8]), clf.preprocess))[0]
    assert (clip - whole[7]).abs().max() <= 1e-5
    # and stream records: one per frame from the first, their probabilities the same
    records = list(stream_probs(clf, stream, device=CPU, hop_frames=1))
    assert [round(t, 3) for t, _ in records] == [round(t, 3) for t, _ in stream]
    assert (torch.stack([p for _, p in records]) - whole.softmax(dim=1)).abs().max() <= 1e-5


@pytest.mark.parametrize("name,options", [ARCHS["cnn-lstm"], ARCHS["convlstm"]], ids=["cnn-lstm", "convlstm"])
def test_the_state_never_grows_over_thousands_of_frames(name, options):
    clf = classifier(name, {**options, "stem_channels": 4} if name == "convlstm" else options, size=16)
    step = FrameStep(clf.model, clf.preprocess)
    state = step.initial_state(1)
    shapes = [(s.shape, s.dtype) for s in state]
    frames = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (50, 1, 3, 16, 16), dtype=np.uint8))
    with torch.inference_mode():
        for i in range(2000):
            logits, *state = step(frames[i % 50], *state)
            assert [(s.shape, s.dtype) for s in state] == shapes
    assert torch.isfinite(logits).all() and all(torch.isfinite(s.float()).all() for s in state)


def test_reset_starts_a_fresh_stream(stream):
    clf = classifier(*ARCHS["convgru"])
    with_resets = list(stream_probs(clf, stream, device=CPU, hop_frames=1, reset_s=0.4))  # every 10 frames
    for start in (0, 10, 20, 30):
        fresh = list(stream_probs(clf, stream[start : start + 10], device=CPU, hop_frames=1))
        got = torch.stack([p for _, p in with_resets[start : start + 10]])
        assert (got - torch.stack([p for _, p in fresh])).abs().max() <= 1e-6
    carried = torch.stack([p for _, p in stream_probs(clf, stream, device=CPU, hop_frames=1)])
    assert (carried[10:] - torch.stack([p for _, p in with_resets[10:]])).abs().max() > 1e-4  # the reset did something


def test_which_checkpoints_step_and_which_keep_their_windows(stream):
    online, clip_trained = classifier(*ARCHS["convgru"]), classifier(*ARCHS["convgru"], online=False)
    assert stepwise_default(online) and not stepwise_default(clip_trained)
    assert len(list(stream_records(online, stream, device=CPU, hop_frames=1))) == FRAMES
    assert len(list(stream_records(clip_trained, stream, device=CPU, hop_frames=1))) == FRAMES - 3  # from a full span
    bidirectional = classifier("cnn-lstm", {**SMALL_LSTM, "bidirectional": True})
    assert not can_step(bidirectional.model) and not stepwise_default(bidirectional)
    with pytest.raises(ValueError, match="cannot read a stream frame by frame"):
        next(stream_probs(bidirectional, stream, device=CPU, hop_frames=1, stepwise=True))
    assert not can_step(VideoNet.__new__(VideoNet))  # torchvision's 3D networks see whole clips (built: 33M weights)
    with pytest.raises(ValueError, match="a reset every"):
        next(stream_probs(clip_trained, stream, device=CPU, hop_frames=1, reset_s=1.0))


def test_forward_steps_in_chunks_equals_one_call(stream):
    """What truncated backpropagation relies on: a state carried from chunk to chunk continues the sequence."""
    clf = classifier(*ARCHS["convlstm"])
    video = torch.from_numpy(np.stack([f for _, f in stream])).permute(0, 3, 1, 2)[None]
    with torch.no_grad():
        x = to_model_input(video.expand(2, -1, -1, -1, -1), torch.tensor([FRAMES] * 2), replace(clf.preprocess))
        state = clf.model.initial_state(x[:, 0])
        whole, _ = clf.model.forward_steps(x, state)
        chunks = []
        for start in range(0, FRAMES, 16):
            logits, state = clf.model.forward_steps(x[:, start : start + 16], state)
            chunks.append(logits)
    assert (torch.cat(chunks, dim=1) - whole).abs().max() <= 1e-5
