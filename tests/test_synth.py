"""The embedded dataset: deterministic, the promised shapes and layout, and no class visible in one frame."""

import numpy as np
import pytest

from vidclf.synth import CLASSES, SPEED_CLASSES, render_clip, write_dataset


@pytest.mark.parametrize("task,classes", [("motion", CLASSES), ("speed", SPEED_CLASSES)])
def test_render_is_deterministic_with_the_promised_shape(task, classes):
    for label in range(len(classes)):
        a = render_clip(label, task=task, frames=9, size=40, rng=np.random.default_rng(7))
        b = render_clip(label, task=task, frames=9, size=40, rng=np.random.default_rng(7))
        c = render_clip(label, task=task, frames=9, size=40, rng=np.random.default_rng(8))
        assert a.shape == (9, 40, 40, 3) and a.dtype == np.uint8
        assert np.array_equal(a, b) and not np.array_equal(a, c)
        assert (np.abs(np.diff(a.astype(int), axis=0)).mean(axis=(1, 2, 3)) > 0).all()  # it moves every frame


def test_bad_arguments_are_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="task should be one of"):
        render_clip(0, task="colour", rng=rng)
    with pytest.raises(ValueError, match="label should be in"):
        render_clip(6, rng=rng)


def _frame_statistics(task, classes, n=60, size=32):
    """Per clip, statistics of its first frame only: mean colour and the mean image on a 4x4 grid."""
    stats = {}
    for label in range(len(classes)):
        frames = [render_clip(label, task=task, frames=2, size=size, rng=np.random.default_rng([1, label, i]))[0]
                  for i in range(n)]
        f = np.stack(frames).astype(np.float64) / 255  # (n, H, W, 3)
        grid = f.reshape(n, 4, size // 4, 4, size // 4, 3).mean(axis=(2, 4))  # (n, 4, 4, 3)
        stats[label] = grid.reshape(n, -1)
    return stats


@pytest.mark.parametrize("task,classes", [("motion", CLASSES), ("speed", SPEED_CLASSES)])
def test_no_single_frame_tells_the_class(task, classes):
    # A nearest-class-mean classifier on first-frame colour/layout statistics stays near chance:
    # position, colour and brightness are drawn the same way for every class.
    stats = _frame_statistics(task, classes)
    means = np.stack([s[: len(s) // 2].mean(0) for s in stats.values()])  # fit on half
    correct = total = 0
    for label, s in stats.items():
        held_out = s[len(s) // 2 :]
        guess = ((held_out[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
        correct += (guess == label).sum()
        total += len(held_out)
    assert correct / total < 1 / len(classes) + 0.2
    spread = np.stack([s.mean(0) for s in stats.values()])  # per-class mean images nearly identical
    assert np.abs(spread - spread.mean(0)).max() < 0.12


def test_write_dataset_layout_and_determinism(tmp_path):
    import cv2

    paths = write_dataset(tmp_path / "a", clips_per_class=2, frames=6, size=32, seed=3, classes=3)
    again = write_dataset(tmp_path / "b", clips_per_class=2, frames=6, size=32, seed=3, classes=3)
    assert [p.relative_to(tmp_path / "a") for p in paths] == [p.relative_to(tmp_path / "b") for p in again]
    assert sorted(p.parent.name for p in paths) == ["down", "down", "left", "left", "right", "right"]
    assert paths[0].name == "down_000.mp4"
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(paths, again))
    cap = cv2.VideoCapture(str(paths[0]))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    assert len(frames) == 6 and frames[0].shape == (32, 32, 3)
    clip = render_clip(0, frames=6, size=32, rng=__import__("vidclf.synth").synth.clip_rng(3, "motion", 0, 0))
    decoded = np.stack(frames)[..., ::-1].astype(int)
    assert np.abs(decoded - clip).mean() < 12  # the file holds that clip (lossy MPEG-4)
    speed = write_dataset(tmp_path / "s", task="speed", clips_per_class=1, frames=4, size=32)
    assert sorted(p.parent.name for p in speed) == ["fast", "normal"]
