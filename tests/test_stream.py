"""`vidclf.stream`: records equal offline classification of the same windows, and sources behave."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.videos import write_video
from vidclf.checkpoint import Classifier
from vidclf.models import build_model
from vidclf.preprocess import Preprocess, in_channels, to_model_input
from vidclf.stream import frames, stream_records
from vidclf.data.video import VideoError

FPS, SIZE, CLASSES = 25, 32, 5
SMALL_LSTM = {"feature_size": 32, "hidden_size": 16}  # small models: parity does not depend on widths
SMALL_CONV = {"stem_channels": 8, "hidden_channels": (8, 8)}  # two layers: the deeper one reruns too
ARCHS = {"cnn-lstm": ("cnn-lstm", SMALL_LSTM),
         "cnn-lstm-no-motion": ("cnn-lstm", {**SMALL_LSTM, "motion_features": False}),
         "cnn-bigru": ("cnn-lstm", {**SMALL_LSTM, "rnn": "gru", "bidirectional": True}),
         "convgru": ("convgru", SMALL_CONV), "convlstm": ("convlstm", SMALL_CONV), "convrnn": ("convrnn", SMALL_CONV)}
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="no ffmpeg binary on PATH")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def video_path(tmp_path_factory) -> Path:
    """40 frames of 64²: a bright square moving over noise, so frame differences are far from zero."""
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 120, (40, 64, 64, 3), dtype=np.uint8)
    for t in range(40):
        clip[t, 20:36, t : t + 16] = 255
    return write_video(tmp_path_factory.mktemp("stream") / "clip.mp4", clip, fps=FPS)


@pytest.fixture(scope="module")
def decoded(video_path) -> list[tuple[float, np.ndarray]]:
    return list(frames(str(video_path), SIZE))


def classifier(name: str, options: dict, pre: Preprocess) -> Classifier:
    torch.manual_seed(0)
    model = build_model(name, CLASSES, in_channels=in_channels(pre.input), **options).eval()
    return Classifier(model, [f"c{i}" for i in range(CLASSES)], pre, Path("random-weights"))


def offline_probs(clf: Classifier, decoded, newest: list[int]) -> torch.Tensor:
    """(records, classes): each window's frames at the stride → to_model_input (full lengths) → model."""
    pre = clf.preprocess
    video = torch.from_numpy(np.stack([f for _, f in decoded])).permute(0, 3, 1, 2)  # (N, 3, H, W)
    span = (pre.num_frames - 1) * pre.frame_stride + 1
    clips = torch.stack([video[n - span + 1 : n + 1 : pre.frame_stride] for n in newest])  # (R, T, 3, H, W)
    with torch.no_grad():
        x = to_model_input(clips, torch.full((len(newest),), pre.num_frames), pre)
        return clf.model(x).softmax(dim=1)


def record_probs(record: dict) -> torch.Tensor:
    probs = torch.zeros(CLASSES)
    for entry in record["topk"]:
        probs[int(entry["label"][1:])] = entry["score"]
    return probs


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("input_mode", ["rgb", "diff", "rgb+diff"])
@pytest.mark.parametrize("name,options", ARCHS.values(), ids=ARCHS.keys())
def test_records_equal_offline_windows(decoded, name, options, input_mode, stride):
    pre = Preprocess(num_frames=4, size=SIZE, frame_stride=stride, input=input_mode)
    clf = classifier(name, options, pre)
    span = 3 * stride + 1
    for hop in (1, 3):
        records = list(stream_records(clf, decoded, device=torch.device("cpu"), hop_frames=hop, top_k=CLASSES))
        newest = list(range(span - 1, len(decoded), hop))
        assert [r["time"] for r in records] == [round(n / FPS, 3) for n in newest]
        got = torch.stack([record_probs(r) for r in records])
        assert (got - offline_probs(clf, decoded, newest)).abs().max() <= 1e-4


@pytest.mark.parametrize("input_mode", ["rgb", "rgb+diff"])
def test_each_frame_goes_through_the_cnn_once(decoded, input_mode):
    """With difference channels, a window's first frame also runs with a zero difference (frame 0 only so)."""
    clf = classifier("cnn-lstm", SMALL_LSTM, Preprocess(num_frames=4, size=SIZE, input=input_mode))
    seen = []
    frame_features = clf.model.frame_features
    clf.model.frame_features = lambda x: seen.append(x.shape[1]) or frame_features(x)
    records = list(stream_records(clf, decoded, device=torch.device("cpu"), hop_frames=1))
    if input_mode == "rgb":
        assert sum(seen) == len(decoded)
    else:
        assert sum(seen) == len(decoded) - 1 + len(records)


def test_hop_in_seconds_single_frame_windows_and_short_sources(decoded):
    clf = classifier("convgru", SMALL_CONV, Preprocess(num_frames=4, size=SIZE))
    cpu = torch.device("cpu")
    by_time = list(stream_records(clf, decoded, device=cpu, hop_s=0.12))  # 3 frames at 25 fps
    assert by_time == list(stream_records(clf, decoded, device=cpu, hop_frames=3))
    assert list(stream_records(clf, decoded[:3], device=cpu, hop_frames=1)) == []  # shorter than a span
    single = classifier("convgru", SMALL_CONV, Preprocess(num_frames=1, size=SIZE))
    records = list(stream_records(single, decoded, device=cpu, hop_frames=1, top_k=CLASSES))
    got = torch.stack([record_probs(r) for r in records])
    assert (got - offline_probs(single, decoded, list(range(len(decoded))))).abs().max() <= 1e-4
    with pytest.raises(ValueError, match="exactly one of hop_s and hop_frames"):
        next(stream_records(clf, decoded, device=cpu))
    with pytest.raises(ValueError, match=r"frames should be \(32, 32, 3\)"):
        next(stream_records(clf, [(0.0, np.zeros((8, 8, 3), np.uint8))], device=cpu, hop_frames=1))


def test_file_source_times_sizes_and_clean_end(video_path, decoded):
    assert len(decoded) == 40 and all(f.shape == (SIZE, SIZE, 3) and f.dtype == np.uint8 for _, f in decoded)
    assert [round(t, 3) for t, _ in decoded] == [round(i / FPS, 3) for i in range(40)]
    source = frames(str(video_path), SIZE)
    assert len(list(source)) == 40 and next(source, None) is None  # ended, and stays ended


def test_unopenable_sources_raise_one_line_video_errors(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a video\n")
    for source, reason in [(str(tmp_path / "missing.mp4"), "no such file"), (str(text), "a text file"),
                           (99, "no such camera"), ("99", "no such camera")]:
        with pytest.raises(VideoError, match=reason) as err:
            next(frames(source, SIZE))
        assert "\n" not in str(err.value)


def test_reconnect_gives_up_after_its_tries():
    start = time.monotonic()
    with pytest.raises(VideoError, match=r"cannot be opened or sends no frames \(2 tries\)") as err:
        next(frames("http://127.0.0.1:9/nothing", SIZE, reconnect_tries=2, backoff_s=0.01))  # loopback only
    assert time.monotonic() - start < 5 and "\n" not in str(err.value)


def _to_mpegts(video_path: Path) -> list[str]:
    """ffmpeg remuxing the same MPEG-4 bitstream into MPEG-TS on stdout: identical decoded frames, but a
    streamable container (dump_extra repeats the stream headers that MP4 keeps in its index)."""
    return ["ffmpeg", "-v", "error", "-i", str(video_path), "-c", "copy", "-bsf:v", "dump_extra", "-f", "mpegts", "-"]


def _digest(items) -> tuple[list[float], str]:
    items = list(items)
    return [round(t, 3) for t, _ in items], hashlib.sha256(b"".join(f.tobytes() for _, f in items)).hexdigest()


@needs_ffmpeg
def test_stdin_stream_gives_the_files_frames(video_path, decoded):
    code = ("import json, sys; from tests.test_stream import _digest; from vidclf.stream import frames; "
            f"print(json.dumps(_digest(frames('-', {SIZE}))))")
    ffmpeg = subprocess.Popen(_to_mpegts(video_path), stdout=subprocess.PIPE)
    done = subprocess.run([sys.executable, "-c", code], stdin=ffmpeg.stdout, capture_output=True, text=True,
                          cwd=Path(__file__).parents[1], timeout=120)
    ffmpeg.wait()
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == list(_digest(decoded))


@needs_ffmpeg
def test_live_url_that_drops_is_reopened_and_its_clock_goes_on(video_path, decoded):
    """A loopback HTTP server sends a live-like MPEG-TS (no length) twice, then refuses: 80 frames, an error."""
    stream, served = subprocess.run(_to_mpegts(video_path), capture_output=True, check=True).stdout, []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            served.append(self.path)
            if len(served) > 2:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "video/mp2t")
            self.end_headers()
            self.wfile.write(stream)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    got = []
    try:
        with pytest.raises(VideoError, match=r"dropped and could not be reopened \(2 tries\)"):
            for item in frames(f"http://127.0.0.1:{server.server_port}/live.ts", SIZE, reconnect_tries=2,
                               backoff_s=0.01):
                got.append(item)
    finally:
        server.shutdown()
    assert len(got) == 80 and len(served) == 3
    times, _ = _digest(got)
    assert times == [round(i / FPS, 3) for i in range(80)]  # one frame interval across the reconnect
    assert _digest(got[40:])[1] == _digest(decoded)[1]


def test_stream_command_writes_records_and_stops_cleanly(trained, tmp_path):
    import json
    import signal
    import subprocess
    import sys

    from tests.test_cli import invoke
    from vidclf.synth import write_dataset

    (clip,) = write_dataset(tmp_path, classes=1, clips_per_class=1, frames=48, size=32, seed=1)
    result = invoke("stream", clip, "--model", trained, "--hop", "0.4")  # 25 fps: every 10 frames
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["time"] for r in records] == [0.28, 0.68, 1.08, 1.48, 1.88]  # from the first full span (8 frames)
    assert all(r["label"] == r["topk"][0]["label"] for r in records)
    bad = invoke("stream", tmp_path / "missing.mp4", "--model", trained)
    assert bad.exit_code == 1 and bad.stderr.strip().count("\n") == 0 and "no such file" in bad.stderr

    (long_clip,) = write_dataset(tmp_path / "long", classes=1, clips_per_class=1, frames=1000, size=32, seed=2)
    proc = subprocess.Popen([sys.executable, "-m", "vidclf", "stream", str(long_clip), "--model", str(trained),
                             "--hop", "0.04", "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    first = proc.stdout.readline()  # a record arrives, flushed, while the stream goes on
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert json.loads(first)["time"] >= 0.28 and proc.returncode == 0 and "Traceback" not in err
