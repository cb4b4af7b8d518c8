import torch

from vidclf.preprocess import Preprocess, augment, in_channels, to_model_input


def test_augmentation_is_the_same_for_every_frame_of_a_clip():
    frame = torch.rand(2, 1, 3, 16, 16)
    clip = frame.expand(2, 5, 3, 16, 16).contiguous()
    out = augment(clip, generator=torch.Generator().manual_seed(0))
    assert out.shape == clip.shape
    assert torch.allclose(out, out[:, :1].expand_as(out))
    assert not torch.allclose(out[0], out[1])  # but differs between clips


def test_normalisation_and_padding_are_zero():
    pre = Preprocess(input="rgb", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    clips = torch.full((1, 4, 3, 2, 2), 255, dtype=torch.uint8)
    x = to_model_input(clips, torch.tensor([2]), pre)
    assert torch.allclose(x[0, :2], torch.ones(2, 3, 2, 2)) and (x[0, 2:] == 0).all()


def test_differences_stay_inside_the_true_length():
    pre = Preprocess(input="rgb+diff", mean=(0, 0, 0), std=(1, 1, 1))
    clips = torch.zeros(1, 4, 3, 2, 2, dtype=torch.uint8)
    clips[0, 1] = 51
    clips[0, 2] = 255  # frame 2 is real, frame 3 is padding (garbage must not leak)
    clips[0, 3] = 200
    x = to_model_input(clips, torch.tensor([3]), pre)
    assert x.shape == (1, 4, in_channels("rgb+diff"), 2, 2)
    diff = x[0, :, 3:]
    assert torch.allclose(diff[0], torch.zeros(3, 2, 2))
    assert torch.allclose(diff[1], torch.full((3, 2, 2), 0.2))
    assert torch.allclose(diff[2], torch.full((3, 2, 2), 0.8))
    assert (diff[3] == 0).all()
