"""Decoding speed: vidclf's loader against the usual ways to get 16 frames out of a video.  (run by hand, never in CI)

Writes ~10 s test videos (320×240, 640×480, 1280×720; MPEG-4 part 2 and MJPEG with OpenCV, H.264
with the `ffmpeg` binary when there is one), then times one clip of 16 uniformly spaced frames
resized to 112×112, single-threaded:

- vidclf      `video.load_clip` (probe, sequential grab(), retrieve() only the 16 frames)
- vidclf auto the same with OpenCV's default decoder threads (what predict uses for large files)
- read()      a plain OpenCV loop converting every frame, keeping the 16
- seek each   CAP_PROP_POS_FRAMES then read() for each of the 16 frames
- ffmpeg      `ffmpeg -threads 1 -i FILE -f null -`: decoding every frame, nothing else (includes
              ~process start-up); the floor for any decoder that must decode every frame
- PyAV        decode every frame, convert the 16 (when `av` is importable)

Cells are median ms per clip, and in brackets the ratio to vidclf (>1: slower than vidclf).

    python benchmarks/decode.py [--seconds 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from vidclf.data import sampling, video  # video quiets OpenCV's logs before cv2 is used here
import cv2  # noqa: E402  (after vidclf.data.video)

NUM, SIZE = 16, 112


def scene(t: int, h: int, w: int, texture: np.ndarray) -> np.ndarray:
    """Frame t of a textured scene panning right, with a moving square: real motion for the codecs."""
    frame = np.roll(texture, 3 * t, axis=1)[:h, :w].copy()
    y, x = (t * 5) % (h - h // 4), (t * 7) % (w - w // 4)
    frame[y : y + h // 4, x : x + w // 4] = (255, 128, 0)
    return frame


def make_videos(folder: Path, seconds: float, fps: int = 25) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for w, h in [(320, 240), (640, 480), (1280, 720)]:
        small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        texture = cv2.resize(small, (w + 8, h + 8), interpolation=cv2.INTER_CUBIC)
        frames = [scene(t, h, w, texture) for t in range(int(seconds * fps))]
        for fourcc, suffix in [("mp4v", ".mp4"), ("MJPG", ".avi")]:
            path = folder / f"{w}x{h}_{fourcc}{suffix}"
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
            for f in frames:
                writer.write(f)  # BGR or RGB does not matter for speed
            writer.release()
            paths.append(path)
        if shutil.which("ffmpeg"):  # H.264 as cameras and the web deliver it: B-frames, keyframe every 250
            path = folder / f"{w}x{h}_h264.mp4"
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w}x{h}",
                            "-r", str(fps), "-i", "-", "-c:v", "libx264", "-preset", "medium", "-pix_fmt", "yuv420p",
                            str(path)], input=np.stack(frames).tobytes(), check=True)
            paths.append(path)
    return paths


def _capture(path: Path) -> cv2.VideoCapture:
    return cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])


def _small(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(cv2.resize(frame, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)


def vidclf_clip(path: Path, threads: int = 1) -> np.ndarray:
    return video.load_clip(path, num_frames=NUM, size=SIZE, threads=threads)[0]


def read_every_frame(path: Path) -> np.ndarray:
    cap = _capture(path)
    wanted = set(sampling.uniform_indices(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), NUM))
    out, i = [], 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if i in wanted:
            out.append(_small(frame))
        i += 1
    cap.release()
    return np.stack(out)


def seek_each_frame(path: Path) -> np.ndarray:
    cap = _capture(path)
    out = []
    for i in sampling.uniform_indices(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), NUM):
        cap.set(cv2.CAP_PROP_POS_FRAMES, i)
        ok, frame = cap.read()
        out.append(_small(frame))
    cap.release()
    return np.stack(out)


def ffmpeg_null(path: Path) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-threads", "1", "-i", str(path), "-f", "null", "-"], check=True)


def pyav_clip(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1
        wanted = set(sampling.uniform_indices(stream.frames, NUM))
        out = [_small(f.to_ndarray(format="bgr24")) for i, f in enumerate(container.decode(stream)) if i in wanted]
    return np.stack(out)


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median milliseconds of `repeat` runs after one warm-up (page cache, lazy imports)."""
    fn()
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return 1000 * statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each test video")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per cell (median)")
    args = parser.parse_args()

    methods: dict[str, Callable[[Path], object]] = {
        "vidclf": vidclf_clip,
        "vidclf auto": lambda p: vidclf_clip(p, threads=0),
        "read()": read_every_frame,
        "seek each": seek_each_frame,
    }
    notes = []
    if shutil.which("ffmpeg"):
        methods["ffmpeg"] = ffmpeg_null
    else:
        notes.append("no ffmpeg binary on PATH: ffmpeg column and H.264 videos left out")
    try:
        import av  # noqa: F401

        methods["PyAV"] = pyav_clip
    except ImportError:
        notes.append("PyAV (`av`) not importable: PyAV column left out")

    with tempfile.TemporaryDirectory() as tmp:
        paths = make_videos(Path(tmp), args.seconds)
        rows = []
        for path in paths:
            info = video.probe(path)
            reference = vidclf_clip(path)
            for name in ("read()", "seek each"):  # the baselines must return the same frames to count
                same = np.array_equal(methods[name](path), reference)
                if not same:
                    notes.append(f"{path.name}: {name} returned frames that differ from vidclf's")
            times = {name: timed(lambda: fn(path), args.repeat) for name, fn in methods.items()}
            rows.append((f"{path.stem} ({info.frames} fr, {path.stat().st_size / 2**20:.1f} MiB)", times))

    names = list(methods)
    print(f"ms per clip of {NUM} frames -> {SIZE}x{SIZE}, median of {args.repeat}; (ratio to vidclf, 1 thread)")
    print("| video | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for label, times in rows:
        base = times["vidclf"]
        cells = [f"{times[n]:.0f}" + ("" if n == "vidclf" else f" ({times[n] / base:.2f}x)") for n in names]
        print(f"| {label} | " + " | ".join(cells) + " |")
    for note in notes:
        print(f"note: {note}")


if __name__ == "__main__":
    main()
