"""Training decode cache formats: raw .npy against per-frame PNG / JPEG (and a zlib .npz), on real videos.  (run by hand, never in CI)

`ClipCache` stores every decoded frame of a training video (up to 512), resized to the training size,
as one uint8 (T, S, S, 3) `.npy`. This measures, for each video in the given folders and each size,
side by side in one process with the formats interleaved:

- video      what a cache miss costs: `video.probe` + `video.read_frames(path, range(n), size=S)`
- npy        `np.save` / `np.load` (today's cache)
- npz        `np.savez_compressed` of the whole array (zlib), loaded back whole
- png1/png3  one `cv2.imencode('.png')` per frame at compression level 1 / 3 (OpenCV's default)
- jpg90/95   one `cv2.imencode('.jpg')` per frame at quality 90 / 95 (RGB→BGR before, BGR→RGB after)

PNG and JPEG frames go into one file per video: a 16-byte header (magic, T, H, W), T+1 uint64
offsets, then the encoded frames back to back, so a reader can also fetch only some frames.

Columns: bytes (per video and per frame), write ms (encode + write, no fsync: as `ClipCache.put`),
read ms (file → uint8 (T, S, S, 3) array) with a cold page cache (`drop_caches` before each round,
needs root; otherwise reported as warm only) and warm, and "clip" ms: the 16 consecutive frames a
training draw uses (`video.clip_indices`, stride 1), read alone where the format allows it (npy by
memory map, PNG/JPEG by decoding just those frames; npz must inflate everything), against decoding
just those frames from the video (`read_frames` of the 16 indices). JPEG's error is the mean absolute
difference in uint8 levels and the PSNR against the decoded frames; the lossless formats are
checked to round-trip exactly. Times are medians of `--repeat` rounds; within a round the formats
run in a rotated order. OpenCV runs one thread (as in DataLoader workers). Ends with an estimate of
each format's disk use for a UCF101-sized dataset (13,320 videos × ~7 s × 25 fps) at 112².

    python benchmarks/cache.py /work/footage/clips                  # 64 and 112, 5 rounds (about 2 min on 2 cores)
    python benchmarks/cache.py VIDEOS... [--sizes 112] [--repeat 5] [--no-drop] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import struct
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from vidclf.data import sampling, video  # video quiets OpenCV's logs before cv2 is used here
from vidclf.data.entry import MAX_FRAMES as MAX_CACHED_FRAMES
from vidclf.data.files import VIDEO_EXTENSIONS
import cv2  # noqa: E402  (after vidclf.data.video)

CLIP = 16  # frames per training clip (vidclf's default num_frames)
EXTENSIONS = VIDEO_EXTENSIONS + (".ogv",)  # in folders: the files vidclf would find, and Ogg/Theora
MAGIC = b"VCF1"
UCF101_VIDEOS, UCF101_FRAMES = 13_320, 7 * 25  # ~7 s at 25 fps on average


# ---- the formats ---------------------------------------------------------------------------------

def _pack(path: Path, frames: np.ndarray, encode: Callable[[np.ndarray], bytes]) -> None:
    T, H, W, _ = frames.shape
    blobs = [encode(f) for f in frames]
    offsets = np.zeros(T + 1, np.uint64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    with open(path, "wb") as f:
        f.write(MAGIC + struct.pack("<III", T, H, W))
        f.write(offsets.tobytes())
        f.write(b"".join(blobs))


def _header(f) -> tuple[int, int, int, np.ndarray]:
    head = f.read(16)
    if head[:4] != MAGIC:
        raise ValueError("not a frame pack")
    T, H, W = struct.unpack("<III", head[4:])
    offsets = np.frombuffer(f.read(8 * (T + 1)), np.uint64).astype(np.int64)
    return T, H, W, offsets


def _unpack(path: Path, decode: Callable[[np.ndarray], np.ndarray], indices: list[int] | None = None) -> np.ndarray:
    with open(path, "rb") as f:
        T, H, W, offsets = _header(f)
        start = 16 + 8 * (T + 1)
        if indices is None:
            indices = list(range(T))
            data = f.read()
            base = 0
        else:  # one read of the span from the first to the last frame asked for
            lo, hi = offsets[min(indices)], offsets[max(indices) + 1]
            f.seek(start + int(lo))
            data = f.read(int(hi - lo))
            base = int(lo)
    buf = np.frombuffer(data, np.uint8)
    out = np.empty((len(indices), H, W, 3), np.uint8)
    for k, i in enumerate(indices):
        out[k] = decode(buf[offsets[i] - base : offsets[i + 1] - base])
    return out


def _png(level: int):
    params = [cv2.IMWRITE_PNG_COMPRESSION, level]

    def encode(frame: np.ndarray) -> bytes:  # lossless: the channel order does not matter
        return cv2.imencode(".png", frame, params)[1].tobytes()

    def decode(buf: np.ndarray) -> np.ndarray:
        return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)

    return encode, decode


def _jpeg(quality: int):
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]

    def encode(frame: np.ndarray) -> bytes:  # JPEG's YCbCr weights assume BGR input
        return cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), params)[1].tobytes()

    def decode(buf: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    return encode, decode


@dataclass
class Format:
    name: str
    suffix: str
    write: Callable[[Path, np.ndarray], None]
    read: Callable[[Path], np.ndarray]
    read_clip: Callable[[Path, list[int]], np.ndarray]
    lossless: bool


def _npz_read(path: Path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as z:
        return z["frames"]


def _npy_clip(path: Path, idx: list[int]) -> np.ndarray:
    return np.ascontiguousarray(np.load(path, mmap_mode="r", allow_pickle=False)[idx])


def formats() -> list[Format]:
    out = [
        Format("npy", ".npy", lambda p, a: np.save(p, a), lambda p: np.load(p, allow_pickle=False), _npy_clip, True),
        Format("npz", ".npz", lambda p, a: np.savez_compressed(p, frames=a), _npz_read,
               lambda p, idx: _npz_read(p)[idx], True),
    ]
    for name, (enc, dec), lossless in [("png1", _png(1), True), ("png3", _png(3), True),
                                       ("jpg90", _jpeg(90), False), ("jpg95", _jpeg(95), False)]:
        out.append(Format(name, ".pack",
                          lambda p, a, enc=enc: _pack(p, a, enc),
                          lambda p, dec=dec: _unpack(p, dec),
                          lambda p, idx, dec=dec: _unpack(p, dec, idx), lossless))
    return out


# ---- measuring -----------------------------------------------------------------------------------

def drop_caches() -> bool:
    """Empty the page cache (root only): the next reads come from the disk."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        return True
    except OSError:
        return False


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return 1000 * (time.perf_counter() - start), result


def rotated(items: list, r: int) -> list:
    r %= len(items)
    return items[r:] + items[:r]


def psnr_mae(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    diff = ref.astype(np.int16) - got.astype(np.int16)
    mse = float(np.mean(diff.astype(np.float64) ** 2))
    return float(np.mean(np.abs(diff))), (float("inf") if mse == 0 else 10 * np.log10(255**2 / mse))


@dataclass
class Row:
    label: str
    frames: int
    decode_ms: float = 0.0  # all frames, cold
    decode_clip_ms: float = 0.0  # the 16 frames only, warm file
    bytes: dict[str, int] = field(default_factory=dict)
    write_ms: dict[str, float] = field(default_factory=dict)
    cold_ms: dict[str, float] = field(default_factory=dict)
    warm_ms: dict[str, float] = field(default_factory=dict)
    clip_ms: dict[str, float] = field(default_factory=dict)
    error: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (MAE, PSNR)


def measure(path: Path, size: int, fmts: list[Format], folder: Path, repeat: int, cold: bool,
            notes: list[str]) -> Row:
    info = video.probe(path)
    ref = video.read_frames(path, range(info.frames), size=size)  # also warms up the decoder and imports
    T = len(ref)
    row = Row(f"{path.name} ({info.width}x{info.height}, {T} fr)", T)
    if T > MAX_CACHED_FRAMES:
        notes.append(f"{path.name}: {T} frames, more than the cache's {MAX_CACHED_FRAMES} (measured anyway)")
    files = {f.name: folder / f"{path.stem}.{size}.{f.name}{f.suffix}" for f in fmts}
    idx = sampling.clip_indices(T, CLIP, stride=1, rng=random.Random(path.name))  # the same draw at every size

    writes: dict[str, list[float]] = {f.name: [] for f in fmts}
    for r in range(repeat):
        for f in rotated(fmts, r):
            files[f.name].unlink(missing_ok=True)
            ms, _ = timed(lambda: f.write(files[f.name], ref))
            writes[f.name].append(ms)
    for f in fmts:
        row.write_ms[f.name] = statistics.median(writes[f.name])
        row.bytes[f.name] = files[f.name].stat().st_size
        got = f.read(files[f.name])
        if got.shape != ref.shape or got.dtype != np.uint8:
            raise AssertionError(f"{f.name}: read back {got.shape} {got.dtype}, wrote {ref.shape} uint8")
        if f.lossless:
            if not np.array_equal(got, ref):
                notes.append(f"{path.name} {size}: {f.name} did not round-trip exactly")
        else:
            row.error[f.name] = psnr_mae(ref, got)
        clip = f.read_clip(files[f.name], idx)
        if not np.array_equal(clip, got[idx]):
            notes.append(f"{path.name} {size}: {f.name}'s clip read differs from its full read")

    # cold rounds: page cache emptied, then the video and every format read once each, rotated
    ops: list[tuple[str, Callable[[], object]]] = [
        ("video", lambda: video.read_frames(path, range(video.probe(path).frames), size=size))]
    ops += [(f.name, lambda f=f: f.read(files[f.name])) for f in fmts]
    cold_runs: dict[str, list[float]] = {name: [] for name, _ in ops}
    for r in range(repeat):
        if cold:
            drop_caches()
        for name, fn in rotated(ops, r):
            cold_runs[name].append(timed(fn)[0])
    row.decode_ms = statistics.median(cold_runs["video"])
    for f in fmts:
        row.cold_ms[f.name] = statistics.median(cold_runs[f.name])

    warm_runs: dict[str, list[float]] = {f.name: [] for f in fmts}
    clip_runs: dict[str, list[float]] = {name: [] for name, _ in ops}
    clip_ops = [("video", lambda: video.read_frames(path, idx, size=size))]
    clip_ops += [(f.name, lambda f=f: f.read_clip(files[f.name], idx)) for f in fmts]
    for r in range(repeat):
        for f in rotated(fmts, r):
            warm_runs[f.name].append(timed(lambda: f.read(files[f.name]))[0])
        for name, fn in rotated(clip_ops, r):
            clip_runs[name].append(timed(fn)[0])
    for f in fmts:
        row.warm_ms[f.name] = statistics.median(warm_runs[f.name])
        row.clip_ms[f.name] = statistics.median(clip_runs[f.name])
    row.decode_clip_ms = statistics.median(clip_runs["video"])
    for p in files.values():
        p.unlink(missing_ok=True)
    return row


# ---- reporting -----------------------------------------------------------------------------------

def table(header: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print()


def kb(n: float) -> str:
    return f"{n / 1000:.1f}"


def report(size: int, rows: list[Row], names: list[str], cold: bool) -> dict[str, float]:
    """Prints the tables for one size; returns pooled bytes per frame by format."""
    total = sum(r.frames for r in rows)
    state = "cold page cache" if cold else "warm page cache (could not drop it)"
    print(f"### {size}×{size}: {len(rows)} videos, {total} frames\n")

    print(f"Size on disk, kB per video (kB per frame); raw frames are {size * size * 3 / 1000:.1f} kB each\n")
    table(["video"] + names, [[r.label] + [f"{kb(r.bytes[n])} ({kb(r.bytes[n] / r.frames)})" for n in names]
                              for r in rows])

    print(f"Reading all of a video's frames, ms per video: {state} / warm; `video` decodes the file ({state})\n")
    table(["video", "video"] + names,
          [[r.label, f"{r.decode_ms:.0f}"] + [f"{r.cold_ms[n]:.1f} / {r.warm_ms[n]:.1f}" for n in names] for r in rows])

    print("Writing (encode + write, no fsync), ms per video\n")
    table(["video"] + names, [[r.label] + [f"{r.write_ms[n]:.1f}" for n in names] for r in rows])

    print(f"One training draw: {CLIP} consecutive frames, warm, ms (`video`: decode just those frames from the file; "
          "npy by memory map, where today's ClipCache loads the whole file: see the read table)\n")
    table(["video", "video"] + names,
          [[r.label, f"{r.decode_clip_ms:.1f}"] + [f"{r.clip_ms[n]:.2f}" for n in names] for r in rows])

    lossy = [n for n in names if rows[0].error.get(n)]
    if lossy:
        print("JPEG's error against the decoded frames: mean absolute error in levels / PSNR dB\n")
        table(["video"] + lossy, [[r.label] + [f"{r.error[n][0]:.2f} / {r.error[n][1]:.1f}" for n in lossy]
                                  for r in rows])

    def pooled(get: Callable[[Row], float]) -> float:
        return sum(get(r) for r in rows) / total

    def med(get: Callable[[Row], float]) -> float:
        return statistics.median(get(r) for r in rows)

    print(f"Summary at {size}×{size}: per frame = sum over all videos / {total} frames; "
          f"median and range over the {len(rows)} videos of the per-video figure\n")
    header = ["format", "kB/frame (all)", "median [min–max]", "vs npy", "write ms/frame",
              "read ms/frame cold", "read ms/frame warm", f"{CLIP}-frame draw ms (median)", "MAE / PSNR dB (all)"]
    summary = [["video (decode)", "-", "-", "-", "-", f"{pooled(lambda r: r.decode_ms):.2f}", "-",
                f"{med(lambda r: r.decode_clip_ms):.1f}", "-"]]
    per_frame: dict[str, float] = {}
    npy_bytes = pooled(lambda r: r.bytes["npy"])
    for n in names:
        b = pooled(lambda r: r.bytes[n])
        per_frame[n] = b
        each = [r.bytes[n] / r.frames for r in rows]
        if n in lossy:
            mae = sum(r.error[n][0] * r.frames for r in rows) / total
            mse = sum(255**2 / 10 ** (r.error[n][1] / 10) * r.frames for r in rows) / total
            err = f"{mae:.2f} / {10 * np.log10(255**2 / mse):.1f}"
        else:
            err = "0 (exact)"
        summary.append([n, kb(b), f"{kb(statistics.median(each))} [{kb(min(each))}–{kb(max(each))}]",
                        f"{b / npy_bytes:.3f}", f"{pooled(lambda r: r.write_ms[n]):.3f}",
                        f"{pooled(lambda r: r.cold_ms[n]):.3f}", f"{pooled(lambda r: r.warm_ms[n]):.3f}",
                        f"{med(lambda r: r.clip_ms[n]):.2f}", err])
    table(header, summary)
    per_frame.update({f"{n} median": statistics.median(r.bytes[n] / r.frames for r in rows) for n in names})
    per_frame.update({f"{n} min": min(r.bytes[n] / r.frames for r in rows) for n in names})
    per_frame.update({f"{n} max": max(r.bytes[n] / r.frames for r in rows) for n in names})
    per_frame.update({f"{n} read": pooled(lambda r: r.warm_ms[n]) for n in names})
    per_frame.update({f"{n} draw": med(lambda r: r.clip_ms[n]) for n in names})
    return per_frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="+", help="video files or folders (searched recursively)")
    parser.add_argument("--sizes", default="64,112", help="training sizes, comma-separated")
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds per cell (median)")
    parser.add_argument("--no-drop", action="store_true", help="do not empty the page cache (cold = warm)")
    parser.add_argument("--workdir", help="where to write the cache files (default: a temporary folder)")
    args = parser.parse_args()

    cv2.setNumThreads(1)
    sizes = [int(s) for s in args.sizes.split(",")]
    paths = []
    for p in map(Path, args.videos):
        paths += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in EXTENSIONS) if p.is_dir() else [p]
    fmts = formats()
    names = [f.name for f in fmts]
    notes: list[str] = []
    cold = not args.no_drop and drop_caches()
    if not args.no_drop and not cold:
        notes.append("could not write /proc/sys/vm/drop_caches (needs root): 'cold' reads are warm page-cache reads")
    load = os.getloadavg()
    start = time.perf_counter()
    results: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for size in sizes:
            rows = []
            for path in paths:
                rows.append(measure(path, size, fmts, Path(tmp), args.repeat, cold, notes))
            results[size] = report(size, rows, names, cold)

    if 112 in results:
        frames = UCF101_VIDEOS * UCF101_FRAMES
        pf = results[112]
        print(f"UCF101-sized dataset at 112×112: {UCF101_VIDEOS:,} videos × {UCF101_FRAMES} frames = {frames:,} frames "
              "(GB = 10^9 bytes; from the bytes per frame measured above; per-file headers ignored)\n")
        table(["format", "GB (all-videos kB/frame)", "GB (median video)", "GB (range over videos)",
               "s per epoch reading whole videos (warm, 1 core)", f"s per epoch reading {CLIP}-frame draws"],
              [[n, f"{pf[n] * frames / 1e9:.1f}", f"{pf[n + ' median'] * frames / 1e9:.1f}",
                f"{pf[n + ' min'] * frames / 1e9:.1f}–{pf[n + ' max'] * frames / 1e9:.1f}",
                f"{pf[n + ' read'] * frames / 1000:.0f}", f"{pf[n + ' draw'] * UCF101_VIDEOS / 1000:.0f}"]
               for n in names])
    print(f"{len(paths)} videos, sizes {sizes}, {args.repeat} rounds, OpenCV {cv2.__version__} (1 thread), "
          f"numpy {np.__version__}; load average at start {load[0]:.2f}, at end {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs; run took {time.perf_counter() - start:.0f} s")
    for note in dict.fromkeys(notes):
        print(f"note: {note}")


if __name__ == "__main__":
    main()
