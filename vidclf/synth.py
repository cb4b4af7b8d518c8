"""The embedded default dataset: short clips whose classes differ only in motion.

Two tasks:

- ``"motion"``: a textured shape on a textured background moves down, left, right or up, or
  rotates counter-clockwise or clockwise. Start position, start angle, speed, size, colours and
  textures are random per clip, and the scene wraps around the frame edges (a torus), so the
  position of the shape in any frame is uniform for every class: no single frame tells the class.
- ``"speed"``: a textured object drifts over a static background in a random direction at about
  1 px/frame (``"normal"``) or 3.5 times that (``"fast"``), with sensor noise and flicker; neither
  one frame nor how much of the image changes tells the class, only the motion itself.
- ``"multi"`` (multi-label): two shapes, each moving as a ``"motion"`` class or still; a clip's labels
  are the motions in it (two, one or none), listed in a manifest ``labels.csv``.

- ``"stream"``: for recurrent models on live streams (``train --online``): clips of the motion
  classes for training, and long videos (`write_streams`) in which one scene's motion changes every
  2–5 s, each with its label for every frame.

Rendering is numpy plus OpenCV's ``warpAffine`` (with ``BORDER_WRAP``) and takes well under a
millisecond per frame at 64x64.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence
from pathlib import Path

import numpy as np

CLASSES: tuple[str, ...] = ("down", "left", "right", "rotate_ccw", "rotate_cw", "up")
SPEED_CLASSES: tuple[str, ...] = ("fast", "normal")
TASKS: dict[str, tuple[str, ...]] = {"motion": CLASSES, "speed": SPEED_CLASSES, "multi": CLASSES, "stream": CLASSES}
MULTI_SHAPES = 2  # shapes in every clip of the multi-label task
STREAM_SEGMENT_S = (2.0, 5.0)  # in a long stream the motion changes after a random 2–5 s
SPEED_FACTOR = 3.5  # how many times faster "fast" clips move than "normal" ones

# Unit direction (dx, dy) in image coordinates (y grows downwards) of each translation class.
_DIRECTIONS = {"down": (0.0, 1.0), "left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0)}


def task_classes(task: str) -> tuple[str, ...]:
    """The class names of a task, sorted (index = label)."""
    if task not in TASKS:
        raise ValueError(f"task should be one of {sorted(TASKS)}, got {task!r}.")
    return TASKS[task]


def _texture(rng: np.random.Generator, size: int, colour: np.ndarray, *, cells: int, low: float = 0.35) -> np.ndarray:
    """A smooth random texture of one hue that tiles seamlessly (the scenes wrap around the edges)."""
    import cv2

    coarse = rng.uniform(low, 1.0, size=(cells, cells)).astype(np.float32)
    # Upsample a 3x3 tiling and keep the middle tile: periodic with period `size`, no seams.
    smooth = cv2.resize(np.tile(coarse, (3, 3)), (3 * size, 3 * size), interpolation=cv2.INTER_CUBIC)
    smooth = smooth[size : 2 * size, size : 2 * size, None]  # (H, W, 1)
    grain = rng.uniform(-0.05, 0.05, size=(size, size, 1)).astype(np.float32)
    return np.clip((smooth + grain) * colour[None, None, :], 0, 255)  # (H, W, 3) float32


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(40, 255, size=3).astype(np.float32)


def _sprite(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A bright, striped, asymmetric shape centred in a size x size layer: (colour (H,W,3), alpha (H,W)).

    Bright so that it stands out from the dark backgrounds of `_render_motion`.
    """
    import cv2

    extent = rng.uniform(0.28, 0.42) * size  # the shape's longest side, in pixels
    aspect = rng.uniform(0.45, 0.75)  # short side / long side, so rotation is visible
    w, h = extent, extent * aspect
    c = size / 2
    mask = np.zeros((size, size), np.uint8)
    kind = rng.integers(3)
    if kind == 0:  # rectangle
        pts = np.array([[c - w / 2, c - h / 2], [c + w / 2, c - h / 2], [c + w / 2, c + h / 2], [c - w / 2, c + h / 2]])
    elif kind == 1:  # triangle (points one way, so it is asymmetric)
        pts = np.array([[c - w / 2, c - h / 2], [c + w / 2, c], [c - w / 2, c + h / 2]])
    else:  # "L" shape
        t = h * 0.45
        pts = np.array([[c - w / 2, c - h / 2], [c - w / 2 + t, c - h / 2], [c - w / 2 + t, c + h / 2 - t],
                        [c + w / 2, c + h / 2 - t], [c + w / 2, c + h / 2], [c - w / 2, c + h / 2]])
    cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=4)
    # Stripes across the shape in two colours, so that its own motion is visible.
    colour = rng.uniform(175, 255, size=3).astype(np.float32)
    other = colour * 0.75 + 0.25 * (255 - colour)  # faint stripes of the same hue: rotation stays visible
    period = rng.uniform(0.12, 0.25) * size
    phase = rng.uniform(0, 2 * math.pi)
    theta = rng.uniform(0, math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    wave = 0.5 + 0.5 * np.sin((xx * math.cos(theta) + yy * math.sin(theta)) * 2 * math.pi / period + phase)
    image = wave[..., None] * colour + (1 - wave[..., None]) * other  # (H, W, 3)
    return image.astype(np.float32), mask.astype(np.float32) / 255.0


def _warp(layer: np.ndarray, angle_deg: float, dx: float, dy: float, size: int) -> np.ndarray:
    """Rotate a layer about its centre, then shift it, wrapping around the edges."""
    import cv2

    m = cv2.getRotationMatrix2D((size / 2 - 0.5, size / 2 - 0.5), angle_deg, 1.0)
    m[0, 2] += dx
    m[1, 2] += dy
    return cv2.warpAffine(layer, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)


def _sprite_path(names: Sequence[str], size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A sprite layer (H, W, 4: colour and alpha) and its pose in each frame (T, 3: angle, x, y): between
    frames t and t + 1 it moves as class names[t] does (one name throughout: a clip of one class; names
    that change: a stream whose shape, speed and spin stay); any other name (``"still"``) keeps only the
    small wobble every class has."""
    frames = len(names)
    image, alpha = _sprite(rng, size)
    layer = np.concatenate([image, alpha[..., None]], axis=2)  # (H, W, 4): colour and alpha
    x0, y0 = rng.uniform(0, size, size=2)  # start offset of the shape's centre (wraps around)
    angle0 = rng.uniform(0, 360)
    speed = rng.uniform(0.03, 0.05) * size  # pixels per frame (1.9-3.2 px at 64x64)
    spin = rng.uniform(7.0, 13.0)  # degrees per frame
    # Where the moves before frame t took the shape (exact integers: one class's clip is x0 + dx·speed·t).
    # Rotation: OpenCV angles are counter-clockwise on screen.
    moves = np.array([[*_DIRECTIONS.get(n, (0.0, 0.0)), {"rotate_ccw": 1.0, "rotate_cw": -1.0}.get(n, 0.0)]
                      for n in names])  # (T, 3): dx, dy, turn
    done = np.concatenate([np.zeros((1, 3)), np.cumsum(moves[:-1], axis=0)])  # (T, 3)
    jitter = rng.uniform(-0.15, 0.15, size=(frames, 2)) * speed  # small wobble, same for every class
    return layer, np.stack([angle0 + spin * done[:, 2], x0 + speed * done[:, 0] + jitter[:, 0],
                            y0 + speed * done[:, 1] + jitter[:, 1]], axis=1)


def _composite(background: np.ndarray, sprites: list[tuple[np.ndarray, np.ndarray]], size: int) -> np.ndarray:
    """The sprites (layer, poses) over the background, the first one lowest: uint8 (T, H, W, 3)."""
    frames = len(sprites[0][1])
    out = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):
        image = background
        for layer, poses in sprites:
            angle, x, y = poses[t]
            warped = _warp(layer, angle, x, y, size)  # (H, W, 4)
            a = warped[..., 3:4]
            image = warped[..., :3] * a + image * (1 - a)
        out[t] = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    return out


def _dark_background(rng: np.random.Generator, size: int) -> np.ndarray:
    # A dark, gently textured background and bright shapes: learnable in a few hundred steps
    # (bright-on-bright or busy backgrounds took many times longer to learn from scratch).
    return _texture(rng, size, rng.uniform(10, 100, size=3).astype(np.float32), cells=int(rng.integers(3, 7)), low=0.6)


def _render_motion(name: str, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    return _render_moves([name] * frames, size, rng)


def _render_moves(names: list[str], size: int, rng: np.random.Generator) -> np.ndarray:
    """One scene whose shape makes move names[t] between frames t and t + 1: a clip of one class, or
    a stream whose motion changes while the scene stays."""
    background = _dark_background(rng, size)
    return _composite(background, [_sprite_path(names, size, rng)], size)


def render_multi(names: tuple[str, ...], *, frames: int = 16, size: int = 64, rng: np.random.Generator) -> np.ndarray:
    """A clip of the ``"multi"`` task: MULTI_SHAPES shapes, one moving as each of `names` (motion
    classes, at most MULTI_SHAPES) and the rest still, stacked in a random order. The number of shapes
    is always the same, so only motion tells which labels, and how many, a clip has."""
    if len(names) > MULTI_SHAPES or len(set(names)) < len(names) or not set(names) <= set(CLASSES):
        raise ValueError(f"names should be at most {MULTI_SHAPES} different classes of {CLASSES}, got {names}.")
    background = _dark_background(rng, size)
    sprites = [_sprite_path([name] * frames, size, rng) for name in names + ("still",) * (MULTI_SHAPES - len(names))]
    return _composite(background, [sprites[i] for i in rng.permutation(len(sprites))], size)


def _render_speed(name: str, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    # A textured object drifting over a static textured background, as a camera on a fixed mount
    # sees it, with sensor noise and flicker. The object covers 10-50% of the frame, so how much of
    # the image changes says little about how fast it moves: only the motion itself tells the class.
    import cv2

    background = _texture(rng, size, _random_colour(rng), cells=int(rng.integers(3, 7)))
    texture = _texture(rng, size, _random_colour(rng), cells=int(rng.integers(4, 9)))
    alpha = np.zeros((size, size), np.float32)
    area = rng.uniform(0.10, 0.50) * size * size
    aspect = rng.uniform(0.5, 2.0)
    axes = (max(2, int(math.sqrt(area / math.pi * aspect))), max(2, int(math.sqrt(area / math.pi / aspect))))
    cv2.ellipse(alpha, (size // 2, size // 2), axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1, cv2.LINE_AA)
    layer = np.concatenate([texture, alpha[..., None]], axis=2)  # (H, W, 4)
    base = rng.uniform(0.8, 1.25) * size / 64  # about 1 px/frame at 64x64 for "normal"
    speed = base * (SPEED_FACTOR if name == "fast" else 1.0)
    heading = rng.uniform(0, 2 * math.pi)
    x0, y0 = rng.uniform(0, size, size=2)
    noise = rng.uniform(0.0, 8.0)  # sensor noise, standard deviation in grey levels
    flicker = rng.uniform(0.0, 0.04)  # frame-to-frame gain changes (lighting, auto exposure)
    out = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):
        warped = _warp(layer, 0.0, x0 + math.cos(heading) * speed * t, y0 + math.sin(heading) * speed * t, size)
        a = warped[..., 3:4]
        image = (warped[..., :3] * a + background * (1 - a)) * (1 + flicker * rng.standard_normal())
        image += rng.normal(0.0, noise, size=image.shape)
        out[t] = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    return out


def render_clip(
    label: int, *, task: str = "motion", frames: int = 16, size: int = 64, rng: np.random.Generator
) -> np.ndarray:
    """Render one clip of class ``label`` as uint8 (T, H, W, 3) RGB; all randomness from ``rng``."""
    classes = task_classes(task)
    if not 0 <= label < len(classes):
        raise ValueError(f"label should be in [0, {len(classes)}) for task {task!r}, got {label}.")
    if frames < 1 or size < 8:
        raise ValueError(f"frames should be >= 1 and size >= 8, got frames={frames}, size={size}.")
    if task == "multi":
        raise ValueError("a multi clip has a set of labels: use render_multi")
    render = _render_speed if task == "speed" else _render_motion
    return render(classes[label], frames, size, rng)


def clip_rng(seed: int, task: str, label: int, index: int) -> np.random.Generator:
    """The generator of one clip: independent of how many classes or clips are written."""
    return np.random.default_rng([seed, list(TASKS).index(task), label, index])


def multi_label_sets(names: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The label sets of the multi task over motion classes `names`: none, each one, each pair."""
    return [()] + [(a,) for a in names] + list(itertools.combinations(names, 2))


def write_dataset(
    root: str | Path,
    *,
    task: str = "motion",
    clips_per_class: int = 40,
    frames: int = 16,
    size: int = 64,
    fps: float = 25.0,
    seed: int = 0,
    classes: int | None = None,
) -> list[Path]:
    """Write ``root/<class>/<class>_<i:03d>.mp4`` (MPEG-4 Part 2, "mp4v"); return the paths.

    The same arguments write the same frames (clip ``i`` of a class does not depend on
    ``classes`` or ``clips_per_class``). ``classes`` keeps only the first N classes of the task.
    The ``"multi"`` task writes ``clips_per_class`` clips of every label set (`multi_label_sets`) as
    ``root/clips/<labels>_<i:03d>.mp4`` and the manifest ``root/labels.csv`` (path,labels).
    """
    names = task_classes(task)
    if classes is not None:
        if not 1 <= classes <= len(names):
            raise ValueError(f"classes should be between 1 and {len(names)} for task {task!r}, got {classes}.")
        names = names[:classes]
    if clips_per_class < 1:
        raise ValueError(f"clips_per_class should be >= 1, got {clips_per_class}.")
    root = Path(root)
    if task == "multi":
        return _write_multi(root, names, clips_per_class=clips_per_class, frames=frames, size=size, fps=fps, seed=seed)
    paths: list[Path] = []
    for label, name in enumerate(names):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(clips_per_class):
            clip = render_clip(label, task=task, frames=frames, size=size, rng=clip_rng(seed, task, label, i))
            paths.append(_write_video(folder / f"{name}_{i:03d}.mp4", clip, fps))
    return paths


def _write_multi(root: Path, names: tuple[str, ...], *, clips_per_class: int, frames: int, size: int, fps: float,
                 seed: int) -> list[Path]:
    """The multi task's clips and its manifest; a label set's clips depend only on the set and `seed`."""
    import csv

    folder = root / "clips"
    folder.mkdir(parents=True, exist_ok=True)
    paths, rows = [], []
    for labels in multi_label_sets(names):
        key = sum(2 ** CLASSES.index(n) for n in labels)  # the set, independent of `names`
        stem = "+".join(labels) or "none"
        for i in range(clips_per_class):
            clip = render_multi(labels, frames=frames, size=size, rng=clip_rng(seed, "multi", key, i))
            paths.append(_write_video(folder / f"{stem}_{i:03d}.mp4", clip, fps))
            rows.append({"path": f"clips/{paths[-1].name}", "labels": ";".join(labels)})
    with (root / "labels.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "labels"])
        writer.writeheader()
        writer.writerows(rows)
    return paths


def _write_video(path: Path, clip: np.ndarray, fps: float) -> Path:
    import cv2

    size = clip.shape[1]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size, size))
    if not writer.isOpened():
        raise OSError(f"OpenCV could not open a video writer (mp4v) for {path}.")
    try:
        for frame in clip:
            writer.write(np.ascontiguousarray(frame[..., ::-1]))  # RGB -> BGR for OpenCV
    finally:
        writer.release()
    return path


def stream_labels(frames: int, fps: float, rng: np.random.Generator, classes: tuple[str, ...] = CLASSES) -> list[str]:
    """A label for each of `frames` frames: a class held for 2–5 s, then another, until the end."""
    labels: list[str] = []
    current = None
    while len(labels) < frames:
        current = str(rng.choice([c for c in classes if c != current]))
        labels += [current] * max(1, round(rng.uniform(*STREAM_SEGMENT_S) * fps))
    return labels[:frames]


def write_streams(folder: str | Path, *, count: int = 2, seconds: float = 60.0, size: int = 64, fps: float = 25.0,
                  seed: int = 0, classes: int | None = None) -> list[Path]:
    """Write ``folder/stream_<i:03d>.mp4`` and beside each ``stream_<i:03d>.labels.csv`` (header
    ``frame,label``, one row per frame from 0): long videos whose motion changes at random times
    among the first `classes` classes (all six by default)."""
    import csv

    if count < 1 or seconds <= 0:
        raise ValueError(f"count should be >= 1 and seconds > 0, got count={count}, seconds={seconds}.")
    if not 2 <= (classes or len(CLASSES)) <= len(CLASSES):
        raise ValueError(f"a stream needs between 2 and {len(CLASSES)} classes to change between, got {classes}.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        rng = np.random.default_rng([seed, list(TASKS).index("stream"), 1_000, i])
        labels = stream_labels(max(1, round(seconds * fps)), fps, rng, CLASSES[: classes or len(CLASSES)])
        path = folder / f"stream_{i:03d}.mp4"
        # A frame's label is the motion that brought the scene to it from the frame before: the move
        # between frames t and t + 1 is frame t + 1's label (frame 0, with none before it, has the first's).
        _write_video(path, _render_moves(labels[1:] + labels[-1:], size, rng), fps)
        with open(folder / f"stream_{i:03d}.labels.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["frame", "label"])
            writer.writerows(enumerate(labels))
        paths.append(path)
    return paths
