"""The embedded default dataset: short clips whose classes differ only in how things move.

Every clip draws its own background, shape, colours, position and speed, so no single frame (and
no colour or brightness statistic) tells the class: a model has to compare frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MOTION_CLASSES = ("down", "left", "right", "rotate_ccw", "rotate_cw", "up")
SPEED_CLASSES = ("fast", "normal")
TASKS = {"motion": MOTION_CLASSES, "speed": SPEED_CLASSES}
SPEEDUP = 3.0  # "fast" clips move this many times further per frame than "normal" ones


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random texture around a random colour, float (H, W, 3)."""
    import cv2

    base = rng.uniform(40, 215, 3)
    noise = rng.normal(0, 1, (size // 4 + 1, size // 4 + 1, 3)).astype(np.float32)
    noise = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(base + 25 * noise, 0, 255)


def _motion_clip(label: int, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    import cv2

    name = MOTION_CLASSES[label]
    background = _background(rng, size)
    n = int(rng.integers(4, 7))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radius = size * rng.uniform(0.12, 0.2)
    radii = radius * rng.uniform(0.5, 1.0, n)  # an irregular polygon: its rotation is visible
    colour = rng.uniform(0, 255, 3)
    stripe = 255 - colour
    speed = rng.uniform(1.0, 2.0) * size / 64  # pixels per frame
    spin = np.deg2rad(rng.uniform(8, 15))  # radians per frame
    margin = radius + 1
    speed = min(speed, 0.9 * (size - 2 * margin) / max(frames - 1, 1))  # long clips move slower, staying in view
    travel = speed * (frames - 1)
    cx, cy = rng.uniform(margin, size - margin, 2)
    dx, dy = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}.get(name, (0, 0))
    # Start where the whole path stays inside the frame.
    if dx:
        cx = rng.uniform(margin + max(0, -dx * travel), size - margin - max(0, dx * travel))
    if dy:
        cy = rng.uniform(margin + max(0, -dy * travel), size - margin - max(0, dy * travel))
    turn = {"rotate_cw": 1, "rotate_ccw": -1}.get(name, 0)
    phase = rng.uniform(0, 2 * np.pi)
    out = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):
        a = angles + phase + turn * spin * t
        x = cx + dx * speed * t + radii * np.cos(a)
        y = cy + dy * speed * t + radii * np.sin(a)
        frame = background.copy()
        points = np.round(np.stack([x, y], 1) * 16).astype(np.int32)  # 4 bits of sub-pixel precision
        cv2.fillPoly(frame, [points], colour.tolist(), lineType=cv2.LINE_AA, shift=4)
        tip = np.round(np.array([[cx + dx * speed * t, cy + dy * speed * t], [x[0], y[0]]]) * 16).astype(np.int32)
        cv2.line(frame, tuple(tip[0]), tuple(tip[1]), stripe.tolist(), max(1, size // 32), cv2.LINE_AA, shift=4)
        out[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return out


def _speed_clip(label: int, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    import cv2

    pad = size
    texture = _background(rng, size + 2 * pad)
    blobs = rng.integers(8, 16)
    for _ in range(blobs):  # a few sharp-edged blobs make the drift visible
        centre = tuple(int(v) for v in rng.uniform(0, size + 2 * pad, 2))
        cv2.circle(texture, centre, int(rng.uniform(2, 6) * size / 64), rng.uniform(0, 255, 3).tolist(), -1,
                   cv2.LINE_AA)
    step = rng.uniform(0.6, 1.2) * size / 64 * (SPEEDUP if SPEED_CLASSES[label] == "fast" else 1.0)
    angle = rng.uniform(0, 2 * np.pi)
    vx, vy = step * np.cos(angle), step * np.sin(angle)
    x0 = pad - vx * (frames - 1) / 2
    y0 = pad - vy * (frames - 1) / 2
    out = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):
        m = np.float32([[1, 0, -(x0 + vx * t)], [0, 1, -(y0 + vy * t)]])
        out[t] = np.clip(cv2.warpAffine(texture, m, (size, size), flags=cv2.INTER_LINEAR), 0, 255)
    return out


def render_clip(label: int, *, task: str = "motion", frames: int = 16, size: int = 64,
                rng: np.random.Generator) -> np.ndarray:
    """One clip of class `label`: uint8 (T, H, W, 3) RGB."""
    if task == "motion":
        return _motion_clip(label, frames, size, rng)
    if task == "speed":
        return _speed_clip(label, frames, size, rng)
    raise ValueError(f"task should be one of {', '.join(TASKS)}, got {task!r}")


def write_dataset(root: str | Path, *, task: str = "motion", clips_per_class: int = 40, frames: int = 16,
                  size: int = 64, fps: float = 25.0, seed: int = 0, classes: int | None = None) -> list[Path]:
    """Write ROOT/<class>/<class>_<i>.mp4 (MPEG-4 Part 2); the same seed writes the same frames."""
    import cv2

    if task not in TASKS:
        raise ValueError(f"task should be one of {', '.join(TASKS)}, got {task!r}")
    names = TASKS[task][: classes or None]
    written = []
    for label, name in enumerate(names):
        folder = Path(root) / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(clips_per_class):
            rng = np.random.default_rng([seed, TASKS[task].index(name), i])
            clip = render_clip(TASKS[task].index(name), task=task, frames=frames, size=size, rng=rng)
            path = folder / f"{name}_{i:03d}.mp4"
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size, size))
            if not writer.isOpened():
                raise OSError(f"{path}: OpenCV cannot write MPEG-4 video here")
            for frame in clip:
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            writer.release()
            written.append(path)
    return written
