"""Scale: does vidclf hold up on a real-size dataset with broken files?  (run by hand, never in CI)

Nothing may hang, nothing may be lost, and the cost per clip should stay flat as the dataset grows.
For each size N (`--sizes`, e.g. 500 and 2000 clips) this runs the real CLI as a user would:

- `vidclf check ROOT --workers 2 --decode-timeout 5 --format json` (and `--deep` up to `--deep-max`
  clips): seconds, clips/s, exit code (1 expected), and which broken files it lists;
- 2 epochs of `torchrun --nproc_per_node 2 -m vidclf train ... --device cpu` (OMP_NUM_THREADS=1, a
  fresh decode cache, so epoch 1 is cold and epoch 2 warm): per-epoch rows of metrics.csv and the
  cache's size on disk; it must exit 0 within `--hang-after` seconds;
- `vidclf predict ROOT --output OUT.jsonl ...` killed with SIGKILL once half of the inputs have a
  line, then rerun with `--resume`: every input must appear exactly once, broken ones with `error`.

Every command's peak memory is the summed RSS of its whole process tree (torchrun ranks, DataLoader
workers, decoder processes), sampled from /proc every 0.2 s; shared pages count once per process.
Its CPU seconds are counted too, and so are those of everything else on the machine meanwhile: on a
shared VM other jobs move wall times a lot and CPU times little. A command that outlives its limit
is killed as a hang, after its process tree, kernel stacks and (with `py-spy` on PATH) Python stacks
are written to RUN_DIR/<command>.hang. Outputs go to ROOT_BASE/runs/n<N>/, emptied at each run.

The dataset (written once under `--root` and reused; clip i is the same in every size):
4 classes (down, left, right, up: the shape of `vidclf.synth`'s motion task, rendered at 96² and
stretched to the frame size, plus static sensor noise), at `--fps` (10) frames per second,
durations log-uniform in 2–20 s. Frame sizes: 160×120 45%, 320×240 40%, 640×480 12%, 1280×720 3%.
Codecs: MPEG-4 ('mp4v' .mp4, OpenCV) 35%, H.264 (.mp4, ffmpeg libx264 veryfast) 30%, MJPEG
('MJPG' .avi, OpenCV) 20%, VP9 (.webm, ffmpeg libvpx-vp9 realtime; OpenCV's VP90 writer took 120 s
for one 100-frame 720p clip). About 2% of the files are broken (at least 8): truncated copies
(first half of a good file, each codec in turn), text files named .mp4, and, where FUSE works, two
files served through `tests/stallfs.py` whose reads block after half their bytes (mounted at
ROOT/<class>/stalled/): one mp4v whose index sits at the end (it stalls on open) and one H.264 with
the index first (`+faststart`: it opens, then stalls mid-decode).

    apt-get install -y ffmpeg   # H.264 and VP9 encoders, for writing the dataset only
    python benchmarks/scale.py --sizes 40 --root /work/scale/tiny             # 2 minutes: the whole pipeline
    python benchmarks/scale.py --sizes 500,2000,5000 --root /work/scale/data --report /work/scale/report.md

The last takes about 18 minutes on 2 cores once the dataset exists, and writing the 4,900 clips about
14 more (2 processes). To measure a fixed commit while others edit the tree, run it from outside the
repository with `PYTHONPATH` set to a `git archive HEAD vidclf | tar -x -C DIR` copy.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import multiprocessing
import os
import platform
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the venv's vidclf and torchrun
CLASSES = ("down", "left", "right", "up")
FRAME_SIZES = {(160, 120): 0.45, (320, 240): 0.40, (640, 480): 0.12, (1280, 720): 0.03}
CODECS = {"mp4v": 0.35, "h264": 0.30, "mjpg": 0.20, "vp9": 0.15}
EXT = {"mp4v": ".mp4", "h264": ".mp4", "mjpg": ".avi", "vp9": ".webm"}
FFMPEG_ARGS = {"h264": ("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-threads", "1"),
               "vp9": ("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "0", "-crf", "40",
                       "-pix_fmt", "yuv420p", "-threads", "1")}
RENDER_SIZE = 96  # the synth scene is drawn at 96² and stretched to the frame size
# Broken kinds whose first frames decode: a quick check reads only frame 0, so only --deep can see them.
PREFIX_READABLE = {"stall-mid", "truncated-mjpg", "truncated-vp9"}
TIMEOUT = "5"  # --decode-timeout for every command


# ---- the dataset ---------------------------------------------------------------------------------

@dataclass
class ClipSpec:
    index: int
    label: str
    codec: str
    width: int
    height: int
    frames: int

    @property
    def name(self) -> str:
        return f"{self.index:05d}{EXT[self.codec]}"


def clip_spec(index: int, *, fps: float, seed: int) -> ClipSpec:
    """Clip `index`'s class, codec, frame size and length: fixed by (seed, index) alone."""
    rng = np.random.default_rng([seed, index])
    sizes = list(FRAME_SIZES)
    w, h = sizes[rng.choice(len(sizes), p=list(FRAME_SIZES.values()))]
    codec = list(CODECS)[rng.choice(len(CODECS), p=list(CODECS.values()))]
    seconds = math.exp(rng.uniform(math.log(2), math.log(20)))
    return ClipSpec(index, CLASSES[index % len(CLASSES)], str(codec), int(w), int(h), max(2, round(seconds * fps)))


def render(spec: ClipSpec, seed: int) -> np.ndarray:
    """uint8 (T, H, W, 3) RGB: the synth motion scene, stretched, plus a static noise pattern."""
    import cv2

    from vidclf import synth

    label = synth.CLASSES.index(spec.label)
    small = synth.render_clip(label, frames=spec.frames, size=RENDER_SIZE,
                              rng=synth.clip_rng(seed, "motion", label, spec.index))  # (T, 96, 96, 3)
    noise = np.random.default_rng([seed, spec.index, 1]).integers(-6, 7, size=(spec.height, spec.width, 3), dtype=np.int16)
    out = np.empty((spec.frames, spec.height, spec.width, 3), np.uint8)
    for t, frame in enumerate(small):
        big = cv2.resize(frame, (spec.width, spec.height), interpolation=cv2.INTER_LINEAR)
        out[t] = np.clip(big.astype(np.int16) + noise, 0, 255)
    return out


def encode(path: Path, frames: np.ndarray, codec: str, fps: float) -> None:
    """Write to a temporary name and rename, so an interrupted run never leaves half a clip behind."""
    import cv2

    tmp = path.with_name(f".tmp-{path.name}")
    t, h, w = frames.shape[:3]
    if codec in FFMPEG_ARGS:
        cmd = ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps),
               "-i", "-", *FFMPEG_ARGS[codec], "-f", "mp4" if codec == "h264" else "webm", str(tmp)]
        done = subprocess.run(cmd, input=frames.tobytes(), capture_output=True)
        if done.returncode != 0:
            raise RuntimeError(f"ffmpeg could not write {path}: {done.stderr.decode(errors='replace')[-300:]}")
    else:
        fourcc = cv2.VideoWriter_fourcc(*("MJPG" if codec == "mjpg" else codec))
        writer = cv2.VideoWriter(str(tmp), fourcc, fps, (w, h), True)
        if not writer.isOpened():
            raise RuntimeError(f"OpenCV cannot write {codec} to {tmp.suffix}")
        for frame in frames:
            writer.write(np.ascontiguousarray(frame[..., ::-1]))  # RGB -> BGR
        writer.release()
    os.replace(tmp, path)


def _write_clip(job: tuple[ClipSpec, str, float, int]) -> int:
    spec, folder, fps, seed = job
    from vidclf.data.video import silence_opencv

    silence_opencv()
    import cv2

    cv2.setNumThreads(1)
    encode(Path(folder) / spec.name, render(spec, seed), spec.codec, fps)
    return spec.index


def write_pool(folder: Path, specs: list[ClipSpec], *, fps: float, seed: int, jobs: int) -> float:
    """Encode the clips not yet in `folder` with `jobs` processes; returns the seconds spent."""
    folder.mkdir(parents=True, exist_ok=True)
    todo = [s for s in specs if not (folder / s.name).exists()]
    if not todo:
        return 0.0
    if shutil.which("ffmpeg") is None:
        raise SystemExit("writing H.264 and VP9 needs the ffmpeg binary: apt-get install -y ffmpeg")
    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        for done, _ in enumerate(pool.imap_unordered(_write_clip, [(s, str(folder), fps, seed) for s in todo]), 1):
            if done % 100 == 0 or done == len(todo):
                log(f"wrote {done}/{len(todo)} clips ({time.perf_counter() - start:.0f} s)")
    return time.perf_counter() - start


@dataclass
class Dataset:
    root: Path
    good: list[str]
    broken: dict[str, str]  # path -> kind (text, truncated-<codec>, stall-open, stall-mid)
    stall_source: Path
    stall_mount: Path
    specs: list[ClipSpec] = field(repr=False, default_factory=list)
    lingering: list[int] = field(default_factory=list)  # predict's processes left after its SIGKILL


def build_dataset(base: Path, n: int, *, fps: float, seed: int, jobs: int) -> Dataset:
    """ROOT = base/n<N>: good clips hard-linked from base/pool, then the broken files. Idempotent."""
    n_broken = max(8, round(0.02 * n))
    specs = [clip_spec(i, fps=fps, seed=seed) for i in range(n - n_broken)]
    pool = base / "pool"
    write_pool(pool, specs, fps=fps, seed=seed, jobs=jobs)
    root, source = base / f"n{n}", base / f"n{n}-stall-source"
    mount = root / CLASSES[0] / "stalled"
    unmount_stale(mount)
    good = []
    for s in specs:
        (root / s.label).mkdir(parents=True, exist_ok=True)
        path = root / s.label / f"{s.label}_{s.name}"
        if not path.exists():
            os.link(pool / s.name, path)
        good.append(str(path))
    broken: dict[str, str] = {}
    mount.mkdir(exist_ok=True)
    source.mkdir(exist_ok=True)

    def of_codec(codec: str, at: int = 0) -> ClipSpec:  # the first clip of `codec` from `at` on (or any)
        return next((s for s in specs[at:] if s.codec == codec), next(s for s in specs if s.codec == codec))

    stall_open, stall_mid = source / "stall_open.mp4", source / "stall_mid.mp4"
    if not stall_open.exists():
        shutil.copyfile(pool / of_codec("mp4v").name, stall_open)  # OpenCV's mp4 muxer writes the index last
    if not stall_mid.exists():
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(pool / of_codec("h264").name), "-c", "copy",
                        "-movflags", "+faststart", str(stall_mid)], check=True)  # index first
    broken[str(mount / stall_open.name)] = "stall-open"
    broken[str(mount / stall_mid.name)] = "stall-mid"
    codecs = list(CODECS)
    for k in range(n_broken - 2):
        folder = root / CLASSES[k % len(CLASSES)]
        if k % 2 == 0:
            codec = codecs[(k // 2) % len(codecs)]
            src = of_codec(codec, k)
            path = folder / f"truncated_{k:03d}_{codec}{EXT[codec]}"
            if not path.exists():
                data = (pool / src.name).read_bytes()
                path.write_bytes(data[: len(data) // 2])
            broken[str(path)] = f"truncated-{codec}"
        else:
            path = folder / f"text_{k:03d}.mp4"
            if not path.exists():
                path.write_text("this is not a video, only a text file named .mp4\n" * (k + 1))
            broken[str(path)] = "text"
    return Dataset(root, good, broken, source, mount, specs)


def unmount_stale(mount: Path) -> None:
    """A run killed while mounted leaves a dead FUSE mount behind ('Transport endpoint is not connected')."""
    try:
        os.stat(mount)
        stale = os.path.ismount(mount)
    except OSError:
        stale = True
    if stale:
        subprocess.run(["fusermount3", "-u", "-z", str(mount)], capture_output=True)


def describe(ds: Dataset, fps: float) -> dict:
    sizes = Counter(f"{s.width}×{s.height}" for s in ds.specs)
    codecs = Counter(s.codec for s in ds.specs)
    frames = sum(s.frames for s in ds.specs)
    good_bytes = sum(os.stat(p).st_size for p in ds.good)
    broken_bytes = sum(os.stat(p).st_size for p in ds.broken if not p.startswith(str(ds.stall_mount)))
    return {"sizes": dict(sizes), "codecs": dict(codecs), "frames": frames, "seconds": frames / fps,
            "bytes": good_bytes + broken_bytes, "broken": dict(Counter(ds.broken.values()))}


# ---- measuring commands --------------------------------------------------------------------------

def tree_pids(root: int) -> list[int]:
    """`root` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def tree_rss(root: int) -> int:
    total = 0
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            pass
    return total


class TreeMemory:
    """Samples the summed RSS of a process tree every 0.2 s in a thread; `stop()` gives the largest sum in MB."""

    def __init__(self, pid: int):
        self.pid, self.peak, self.pids = pid, 0, set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, tree_rss(self.pid))
            self.pids.update(tree_pids(self.pid))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak / 1e6


class CpuMeter:
    """CPU seconds used by the commands this process waited for, and by everything else on the machine
    meanwhile (other people's jobs on a shared VM: they explain noisy timings)."""

    def __init__(self):
        self.ours, self.busy = self._ours(), self._busy()

    @staticmethod
    def _ours() -> float:
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)  # reaped descendants, whole trees
        return ru.ru_utime + ru.ru_stime

    @staticmethod
    def _busy() -> float:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> tuple[float, float]:
        ours = self._ours() - self.ours
        return ours, max(0.0, self._busy() - self.busy - ours)


@dataclass
class Run:
    cmd: list[str]
    rc: int | None  # None: killed after the time limit (a hang)
    seconds: float
    peak_mb: float
    cpu: tuple[float, float]  # CPU seconds: this command's tree, everything else on the machine
    stdout: str
    stderr: str


def start(cmd: list[str], log_dir: Path, name: str, env: dict | None = None) -> tuple[subprocess.Popen, Path, Path]:
    out, err = log_dir / f"{name}.stdout", log_dir / f"{name}.stderr"
    proc = subprocess.Popen([str(BIN / cmd[0]), *cmd[1:]], stdout=out.open("wb"), stderr=err.open("wb"),
                            stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})}, start_new_session=True)
    return proc, out, err


def run(cmd: list[str], log_dir: Path, name: str, *, limit: float, env: dict | None = None) -> Run:
    """Run `cmd` (vidclf or torchrun from this venv) to the end or to `limit` seconds, then kill its group."""
    log(f"$ {command_text(cmd, env)}")
    begin = time.perf_counter()
    proc, out, err = start(cmd, log_dir, name, env)
    mem, cpu = TreeMemory(proc.pid), CpuMeter()
    try:
        rc = proc.wait(limit)
    except subprocess.TimeoutExpired:
        rc = None
        (log_dir / f"{name}.hang").write_text(hang_dump(proc.pid))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    seconds = time.perf_counter() - begin
    result = Run(cmd, rc, seconds, mem.stop(), cpu.stop(), out.read_text(errors="replace"), err.read_text(errors="replace"))
    if rc is None:
        result.stderr += f"\n[hung: process tree and stacks in {log_dir / f'{name}.hang'}]"
    log(f"  exit {'HUNG (killed)' if rc is None else rc} after {seconds:.1f} s, peak {result.peak_mb:.0f} MB, "
        f"CPU s {result.cpu[0]:.0f} (others {result.cpu[1]:.0f})")
    return result


def hang_dump(root: int) -> str:
    """Where a hung process tree sits: each process's threads and kernel wait channels, its kernel
    stack, and its Python stacks where `py-spy` is on PATH."""
    parts = []
    for pid in tree_pids(root):
        parts.append(f"== {pid} {_cmdline(pid)}")
        try:
            for tid in sorted(os.listdir(f"/proc/{pid}/task"), key=int):
                task = f"/proc/{pid}/task/{tid}"
                state = Path(f"{task}/stat").read_text().rsplit(")", 1)[1].split()[0]
                parts.append(f"  thread {tid} {Path(f'{task}/comm').read_text().strip()} state {state} "
                             f"wchan {Path(f'{task}/wchan').read_text()}")
            parts.append(Path(f"/proc/{pid}/stack").read_text())
        except OSError as e:
            parts.append(f"  ({e})")
        if shutil.which("py-spy") and "python" in _cmdline(pid):
            done = subprocess.run(["py-spy", "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30)
            parts.append(done.stdout + done.stderr)
    return "\n".join(parts)


def command_text(cmd: list[str], env: dict | None = None) -> str:
    return " ".join([*(f"{k}={v}" for k, v in (env or {}).items()), shlex.join(cmd)])


def du(folder: Path) -> tuple[int, int]:
    """Bytes on disk (as `du` counts them) and number of files under `folder`."""
    size, count = 0, 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            st = os.stat(os.path.join(dirpath, name))
            size, count = size + st.st_blocks * 512, count + 1
    return size, count


# ---- the three commands --------------------------------------------------------------------------

def bench_check(ds: Dataset, work: Path, *, deep: bool, limit: float) -> dict:
    cmd = ["vidclf", "check", str(ds.root), "--workers", "2", "--decode-timeout", TIMEOUT, "--format", "json",
           *(["--deep"] if deep else []), "--quiet"]
    r = run(cmd, work, "check-deep" if deep else "check", limit=limit)
    total = len(ds.good) + len(ds.broken)
    row = {"cmd": command_text(cmd), "rc": r.rc, "seconds": r.seconds, "clips_per_s": total / r.seconds,
           "peak_mb": r.peak_mb, "cpu": r.cpu, "files": total}
    try:
        report = json.loads(r.stdout)
    except ValueError:
        row["error"] = f"stdout is not JSON: {r.stdout[-500:]!r}; stderr: {r.stderr[-2000:]}"
        return row
    failed = {f["path"]: f["error"] for f in report["failed"]}
    suspect = {s["path"]: s["problem"] for s in report["suspect"]}
    row |= {"num_clips": report["num_clips"], "failed": len(failed), "suspect": len(suspect),
            "listed": {p: ("failed" if p in failed else "suspect" if p in suspect else "MISSED") for p in ds.broken},
            "good_flagged": {p: failed.get(p) or suspect.get(p) for p in ds.good if p in failed or p in suspect},
            "reasons": {p: failed.get(p) or suspect.get(p) for p in ds.broken}}
    return row


def bench_train(ds: Dataset, work: Path, *, limit: float) -> dict:
    cache, out = work / "cache", work / "models"
    for folder in (cache, out):
        shutil.rmtree(folder, ignore_errors=True)
    cmd = ["torchrun", "--nproc_per_node", "2", "-m", "vidclf", "train", "--data", str(ds.root), "--epochs", "2",
           "--frames", "8", "--size", "64", "--batch-size", "16", "--workers", "1", "--cache", str(cache),
           "--cache-size", "20GB", "--decode-timeout", TIMEOUT, "--out", str(out), "--device", "cpu", "--quiet"]
    env = {"OMP_NUM_THREADS": "1"}
    r = run(cmd, work, "train", limit=limit, env=env)
    row = {"cmd": command_text(cmd, env), "rc": r.rc, "seconds": r.seconds, "peak_mb": r.peak_mb, "cpu": r.cpu,
           "stderr_tail": r.stderr[-3000:], "epochs": [], "best": None}
    runs = sorted(out.glob("*/metrics.csv"))
    if runs:
        with runs[-1].open() as f:
            row["epochs"] = [{k: float(v) for k, v in rec.items() if v not in ("", None)} for rec in csv.DictReader(f)]
        best = runs[-1].parent / "best.pt"
        row["best"] = str(best) if best.exists() else None
    size, files = du(cache)
    entries = len(list(cache.rglob("*.jpgs")))
    row |= {"cache_bytes": size, "cache_files": files, "cache_entries": entries,
            "bytes_per_entry": size / entries if entries else None}
    return row


def bench_predict(ds: Dataset, work: Path, model: str, *, limit: float) -> dict:
    from vidclf.predict import expand_inputs

    inputs = expand_inputs([str(ds.root)])
    out = work / "predict.jsonl"
    out.unlink(missing_ok=True)
    base = ["vidclf", "predict", str(ds.root), "--output", str(out), "--workers", "2", "--decode-timeout", TIMEOUT,
            "--model", model, "--quiet"]
    # Part 1: kill -9 once half of the inputs have a line.
    log(f"$ {command_text(base)}   (SIGKILL at {len(inputs) // 2} lines)")
    begin = time.perf_counter()
    proc, _, err1 = start(base, work, "predict-1")
    mem, cpu = TreeMemory(proc.pid), CpuMeter()
    lines, rc1 = 0, None
    while time.perf_counter() - begin < limit:
        lines = out.read_bytes().count(b"\n") if out.exists() else 0
        if lines >= len(inputs) // 2 or (rc1 := proc.poll()) is not None:
            break
        time.sleep(0.05)
    children = [p for p in tree_pids(proc.pid) if p != proc.pid]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = time.perf_counter() - begin
    peak1, cpu1 = mem.stop(), cpu.stop()  # ours: predict's own process only (its children die unreaped)
    # Do the children notice their parent's death? Give them 10 s, then kill what is left.
    deadline, left = time.monotonic() + 10, children
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = [p for p in left if _alive(p)]
    orphans = [f"{p} state {_state(p)}: {_cmdline(p)}" for p in left]  # D: blocked in the kernel (a stalled read)
    ds.lingering = left
    for p in left:
        os.kill(p, signal.SIGKILL)
    lines_at_kill = out.read_bytes().count(b"\n") if out.exists() else 0
    log(f"  killed after {first:.1f} s at {lines_at_kill} lines; children left 10 s later: {len(orphans)}")
    # Part 2: --resume.
    r = run([*base, "--resume"], work, "predict-2", limit=limit)
    records, bad_lines = [], 0
    for line in out.read_bytes().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            bad_lines += 1
    seen = Counter(rec.get("path") for rec in records)
    errors = {rec["path"]: rec.get("error") for rec in records if rec.get("error")}
    return {"cmd": command_text(base), "cmd_resume": command_text([*base, "--resume"]), "inputs": len(inputs),
            "killed_early": rc1, "first_seconds": first, "lines_at_kill": lines_at_kill, "peak1_mb": peak1,
            "children_at_kill": len(children), "orphans": orphans, "rc": r.rc, "resume_seconds": r.seconds,
            "peak_mb": max(peak1, r.peak_mb), "cpu": (cpu1[0] + r.cpu[0], cpu1[1] + r.cpu[1]), "records": len(records), "bad_lines": bad_lines,
            "missing": sorted(set(inputs) - set(seen)), "extra": sorted(set(seen) - set(inputs)),
            "duplicates": sorted(p for p, c in seen.items() if c > 1),
            "broken_without_error": sorted(p for p in ds.broken if p in seen and p not in errors),
            "good_with_error": {p: e for p, e in errors.items() if p not in ds.broken},
            "errors": {p: errors.get(p) for p in ds.broken},
            "labels": {rec["path"]: f"label {rec.get('label')} score {rec.get('score')}" for rec in records
                       if rec.get("path") in ds.broken and not rec.get("error")},
            "stderr_tail": (err1.read_text(errors="replace")[-1500:]
                                                                             + r.stderr[-1500:])}


def _state(pid: int) -> str:
    """R, S, D (uninterruptible: blocked in the kernel), Z (exited, not yet reaped), or - (gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "-"


def _alive(pid: int) -> bool:
    return _state(pid) not in ("Z", "-")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
    except OSError:
        return "?"


# ---- the report ----------------------------------------------------------------------------------

def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def machine() -> str:
    import cv2
    import torch

    import vidclf

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    return (f"{os.cpu_count()} CPUs ({cpu}), {platform.machine()}, Python {platform.python_version()}, "
            f"torch {torch.__version__}, cv2 {cv2.__version__}, vidclf from {Path(vidclf.__file__).parent}, "
            f"{subprocess.run(['ffmpeg', '-version'], capture_output=True, text=True).stdout.split(' Copyright')[0]}")


def report(results: list[dict], fuse: str | None, wall: float, loads: tuple, gen_seconds: float) -> str:
    md = [f"# vidclf at scale — `python benchmarks/scale.py {' '.join(sys.argv[1:])}`", "",
          f"Machine: {machine()}. Load average (1 min) {loads[0]:.2f} when measuring began, {loads[1]:.2f} at the end. "
          f"Wall time {wall / 60:.1f} min (dataset writing {gen_seconds / 60:.1f} min of it; 0 when cached).",
          f"Stalling files: {'2 through tests/stallfs.py' if fuse is None else 'none, FUSE unavailable: ' + fuse}.", ""]
    md += ["## Datasets", "", table(
        ["N", "good clips", "broken", "by size", "by codec", "frames", "video time", "bytes"],
        [[r["n"], len(r["ds"].good), ", ".join(f"{k} {v}" for k, v in r["info"]["broken"].items()),
          ", ".join(f"{k} {v}" for k, v in r["info"]["sizes"].items()),
          ", ".join(f"{k} {v}" for k, v in r["info"]["codecs"].items()), r["info"]["frames"],
          f"{r['info']['seconds'] / 3600:.2f} h", f"{r['info']['bytes'] / 1e9:.2f} GB"] for r in results]), ""]
    md += ["## check", "", table(
        ["N", "what", "exit", "seconds", "clips/s", "peak MB", "CPU s (others')", "readable", "failed", "suspect",
         "broken listed", "good flagged"],
        [[r["n"], "deep" if "--deep" in c["cmd"] else "quick", _rc(c["rc"]), f"{c['seconds']:.1f}",
          f"{c['clips_per_s']:.1f}", f"{c['peak_mb']:.0f}", _cpu(c), c.get("num_clips", "?"), c.get("failed", "?"),
          c.get("suspect", "?"), _listed(c, r["ds"].broken), len(c.get("good_flagged", {}))]
         for r in results for c in r["checks"]]), ""]
    md += ["## train (2 epochs, torchrun 2 ranks)", "", table(
        ["N", "exit", "wall s", "peak MB", "CPU s (others')", "epoch", "seconds", "clips/s", "data wait",
         "train clips", "val clips", "val acc", "cache", "per entry"],
        [[r["n"], _rc(t["rc"]), f"{t['seconds']:.0f}", f"{t['peak_mb']:.0f}", _cpu(t), int(e["epoch"]), f"{e['seconds']:.1f}",
          f"{e['clips_per_s']:.1f}", f"{e['data_wait']:.0%}", int(e["train_clips"]), int(e["val_clips"]),
          f"{e.get('val_acc', float('nan')):.3f}", f"{t['cache_bytes'] / 1e6:.0f} MB in {t['cache_entries']} entries",
          f"{(t['bytes_per_entry'] or 0) / 1e3:.0f} kB"]
         for r in results for t in [r["train"]] for e in t["epochs"]] or [[r["n"], _rc(r["train"]["rc"])] + [""] * 12
                                                                          for r in results]), ""]
    md += ["## predict (SIGKILL at half, then --resume)", "", table(
        ["N", "inputs", "part 1 s", "lines at kill", "children left 10 s after kill", "resume exit", "resume s",
         "clips/s (both)", "peak MB", "CPU s (others')", "records", "missing", "duplicates", "bad lines", "broken w/o error",
         "good with error"],
        [[r["n"], p["inputs"], f"{p['first_seconds']:.1f}", p["lines_at_kill"], len(p["orphans"]), _rc(p["rc"]),
          f"{p['resume_seconds']:.1f}", f"{p['inputs'] / (p['first_seconds'] + p['resume_seconds']):.1f}",
          f"{p['peak_mb']:.0f}", _cpu(p), p["records"], len(p["missing"]), len(p["duplicates"]), p["bad_lines"],
          len(p["broken_without_error"]), len(p["good_with_error"])]
         for r in results if (p := r.get("predict"))]), ""]
    md += ["\"CPU s (others')\": CPU seconds of the command's process tree, and in brackets of everything else "
           "on the machine while it ran (2 cores give 2 CPU seconds per second; for the killed predict only its "
           "own process counts as ours).", ""]
    md += ["## Milliseconds per clip", "", _per_clip(results), "",
           "Per clip: a command's seconds (or CPU seconds) over its clips (a train epoch: over its train + val "
           "clips). The marginal "
           "cost is (T_large − T_small) / (N_large − N_small): it leaves out what a run pays once whatever its size "
           "(process and model start, each stalled file's 5 s timeout), which makes small runs look dearer per clip.",
           ""]
    md += ["## Broken files: what each command said, per kind", "",
           "Counts of files listed (check: failed or suspect; predict: a record with `error`), then one reason.", ""]
    for r in results:
        kinds = list(dict.fromkeys(r["ds"].broken.values()))
        steps = [(("check --deep" if "--deep" in c["cmd"] else "check"), c.get("reasons", {})) for c in r["checks"]]
        steps.append(("predict", (r.get("predict") or {}).get("errors", {})))
        rows = []
        for kind in kinds:
            paths = [p for p, k in r["ds"].broken.items() if k == kind]
            row = [r["n"], kind, len(paths)]
            for _, reasons in steps:
                said = [reasons[p] for p in paths if reasons.get(p)]
                row.append(f"{len(said)}/{len(paths)}" + (f": {_short(said[0].split(': ', 1)[-1])}" if said else ""))
            rows.append(row)
        md += [table(["N", "kind", "files", *(name for name, _ in steps)], rows), ""]
    md += ["## Problems seen", ""] + (_problems(results) or ["none"]) + [""]
    md += ["## Commands", "", "```"]
    for r in results:
        md += [c["cmd"] for c in r["checks"]] + [r["train"]["cmd"]]
        if r.get("predict"):
            md += [r["predict"]["cmd"] + "   # SIGKILL at half", r["predict"]["cmd_resume"]]
    return "\n".join(md + ["```", ""])


def _cpu(row: dict) -> str:
    ours, others = row.get("cpu", (0.0, 0.0))
    return f"{ours:.0f} ({others:.0f})"


def _rc(rc: int | None) -> str:
    return "HUNG" if rc is None else str(rc)


def _short(text: str | None) -> str:
    return "" if not text else text.replace("|", "/").replace("\n", " ")[-90:]


def _listed(c: dict, broken: dict[str, str]) -> str:
    """'listed/visible', and for a quick check '(+listed/n prefix-readable)': those it cannot see."""
    listed = c.get("listed", {})
    hidden = [p for p in listed if broken[p] in PREFIX_READABLE] if "--deep" not in c["cmd"] else []
    seen = [p for p in listed if p not in hidden]
    text = f"{sum(listed[p] != 'MISSED' for p in seen)}/{len(seen)}"
    return text + (f" (+{sum(listed[p] != 'MISSED' for p in hidden)}/{len(hidden)} prefix-readable)" if hidden else "")


def _per_clip(results: list[dict]) -> str:
    def costs(r: dict) -> dict[str, float]:
        n = len(r["ds"].good) + len(r["ds"].broken)
        out = {("check --deep" if "--deep" in c["cmd"] else "check"): c["seconds"] / n for c in r["checks"]}
        for e in r["train"]["epochs"]:
            out[f"train epoch {int(e['epoch'])}"] = e["seconds"] / max(e["train_clips"] + e["val_clips"], 1)
        out["train, whole command (2 epochs)"] = r["train"]["seconds"] / n
        # CPU time, not wall time: other jobs on a shared machine change the one but hardly the other.
        for c in r["checks"]:
            out[f"{'check --deep' if '--deep' in c['cmd'] else 'check'}, CPU"] = c["cpu"][0] / n
        out["train, CPU (2 epochs)"] = r["train"]["cpu"][0] / n
        if p := r.get("predict"):
            out["predict (kill + resume)"] = (p["first_seconds"] + p["resume_seconds"]) / p["inputs"]
        return out

    per = [costs(r) for r in results]
    names = list(dict.fromkeys(k for c in per for k in c))
    rows = []
    for k in names:
        row = [k, *(f"{c[k] * 1000:.1f}" if k in c else "-" for c in per)]
        if len(results) > 1:
            small, large, n0, n1 = per[0].get(k), per[-1].get(k), results[0]["n"], results[-1]["n"]
            both = small is not None and large is not None
            row += [f"{large / small:.2f}" if both else "-",
                    f"{(large * n1 - small * n0) / (n1 - n0) * 1000:.1f}" if both else "-"]
        rows.append(row)
    n0, n1 = results[0]["n"], results[-1]["n"]
    extra = [f"ratio N={n1} / N={n0}", f"marginal ms per clip, N={n0}→{n1}"] if len(results) > 1 else []
    return table(["ms per clip", *(f"N={r['n']}" for r in results), *extra], rows)


def _problems(results: list[dict]) -> list[str]:
    out = []
    for r in results:
        n = r["n"]
        for c in r["checks"]:
            what = "check --deep" if "--deep" in c["cmd"] else "check"
            if c["rc"] != 1:
                out.append(f"- N={n} {what}: exit {_rc(c['rc'])}, expected 1")
            if "error" in c:
                out.append(f"- N={n} {what}: {c['error']}")
            missed = [p for p, how in c.get("listed", {}).items() if how == "MISSED"]
            hidden = Counter(r["ds"].broken[p] for p in missed if what == "check" and r["ds"].broken[p] in PREFIX_READABLE)
            if hidden:
                out.append(f"- N={n} check: not listed, as expected without --deep (their first frames read): "
                           + ", ".join(f"{v} {k}" for k, v in hidden.items()))
            for p in missed:
                if not (what == "check" and r["ds"].broken[p] in PREFIX_READABLE):
                    out.append(f"- N={n} {what}: broken file not listed: {p} ({r['ds'].broken[p]})")
            for p, why in c.get("good_flagged", {}).items():
                out.append(f"- N={n} {what}: good file flagged: {p}: {why}")
        t = r["train"]
        if t["rc"] != 0:
            out.append(f"- N={n} train: exit {_rc(t['rc'])}, expected 0; stderr tail:\n```\n{t['stderr_tail']}\n```")
        elif len(t["epochs"]) != 2 or not t["best"]:
            out.append(f"- N={n} train: {len(t['epochs'])} metrics rows, best.pt {t['best']}")
        p = r.get("predict")
        if not p:
            continue
        if p["killed_early"] is not None:
            out.append(f"- N={n} predict part 1 ended by itself (exit {p['killed_early']}) before half the lines")
        if p["orphans"]:
            after = p.get("orphans_after_unmount")
            expected = after == "none" and all(" state D:" in o for o in p["orphans"])
            out.append(f"- N={n} predict: {len(p['orphans'])} processes outlived the SIGKILLed predict by 10 s"
                       + (" (expected: decoders the watchdog abandoned on the stalled mount, asleep in the kernel; "
                          "they ended when it was unmounted)" if expected else "")
                       + f": {p['orphans']}; still alive after unmounting: {after}")
        if p["rc"] != 1:
            out.append(f"- N={n} predict --resume: exit {_rc(p['rc'])}, expected 1; stderr:\n```\n"
                       f"{p['stderr_tail']}\n```")
        for key in ("missing", "extra", "duplicates"):
            if p[key]:
                out.append(f"- N={n} predict: {key}: {p[key]}")
        for kind, count in Counter(r["ds"].broken[path] for path in p["broken_without_error"]).items():
            labels = [p["labels"].get(path) for path in p["broken_without_error"] if r["ds"].broken[path] == kind]
            out.append(f"- N={n} predict: {count} {kind} file(s) labelled with no error (a readable prefix): "
                       + "; ".join(map(str, labels)))
        if p["good_with_error"]:
            out.append(f"- N={n} predict: good files with error: {p['good_with_error']}")
        if p["bad_lines"]:
            out.append(f"- N={n} predict: {p['bad_lines']} lines of the output are not JSON")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500,2000", help="dataset sizes in files, comma-separated")
    parser.add_argument("--root", type=Path, default=Path("/work/scale/data"), help="datasets are written (once) here")
    parser.add_argument("--report", type=Path, default=None, help="also write the markdown report here")
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="processes writing the dataset")
    parser.add_argument("--deep-max", type=int, default=500, help="run check --deep on sizes up to this")
    parser.add_argument("--hang-after", type=float, default=1.0,
                        help="a command is a hang after 300 s + this many seconds per clip")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    begin = time.perf_counter()
    sys.path.append(str(REPO))  # tests.stallfs; vidclf itself as installed (or from PYTHONPATH)
    try:
        from tests.stallfs import fuse_unavailable, mounted
        fuse = fuse_unavailable()
    except ImportError as e:
        fuse, mounted = f"tests/stallfs.py unusable: {e}", None
    log(f"load average {os.getloadavg()}; FUSE: {fuse or 'works'}")
    gen_start = time.perf_counter()
    datasets = [build_dataset(args.root, n, fps=args.fps, seed=args.seed, jobs=args.jobs) for n in sizes]
    gen_seconds = time.perf_counter() - gen_start
    loads = [os.getloadavg()[0]]  # once the dataset is written: what other jobs load the machine with
    results = []
    for n, ds in zip(sizes, datasets):
        if fuse is not None:
            ds.broken = {p: k for p, k in ds.broken.items() if not k.startswith("stall")}
        r = {"n": n, "ds": ds, "info": describe(ds, args.fps), "checks": []}
        log(f"N={n}: {r['info']}")
        work = args.root / "runs" / f"n{n}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        limit = 300 + args.hang_after * n
        with (mounted(ds.stall_source, ds.stall_mount) if fuse is None else contextlib.nullcontext()):
            r["checks"].append(bench_check(ds, work, deep=False, limit=limit))
            if n <= args.deep_max:
                r["checks"].append(bench_check(ds, work, deep=True, limit=limit))
            r["train"] = bench_train(ds, work, limit=limit)
            if r["train"]["best"]:
                r["predict"] = bench_predict(ds, work, r["train"]["best"], limit=limit)
        if r.get("predict") and ds.lingering:  # stuck on the stalled mount: they must end with it
            time.sleep(2)
            r["predict"]["orphans_after_unmount"] = [f"{p} state {_state(p)}" for p in ds.lingering if _alive(p)] or "none"
        results.append(r)
        json.dump({k: v for k, v in r.items() if k != "ds"} | {"dataset": {**asdict(ds), "specs": None}},
                  (work / "result.json").open("w"), default=str, indent=1)
    loads.append(os.getloadavg()[0])
    text = report(results, fuse, time.perf_counter() - begin, tuple(loads), gen_seconds)
    print(text)
    if args.report:
        args.report.write_text(text)
        log(f"report written to {args.report}")


if __name__ == "__main__":
    main()
