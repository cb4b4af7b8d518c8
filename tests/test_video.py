"""Decoding is frame-exact, sampling arithmetic is right, and bad files fail with one quiet, clear line."""

import os
import random
import subprocess
import sys
import wave

import numpy as np
import pytest

from tests.videos import decode_index, indexed_frames, tag_rotation, write_video, write_video_ffmpeg
from vidclf.data import sampling, video
from vidclf.data.video import VideoError

ASKED = [59, 0, 17, 17, 3, 42, 58, 1]  # unsorted, a duplicate, the first and last frames


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """120 frames, 64×64 mp4v, 25 fps, frame i showing i; a space and a non-ASCII letter in the name."""
    folder = tmp_path_factory.mktemp("indexed")
    return write_video(folder / "indexed clip ü.mp4", indexed_frames(120))


@pytest.fixture(scope="module")
def long_mjpg(tmp_path_factory):
    """1000 frames: long enough that a sparse sample seeks at the real SEEK_GAP."""
    return write_video(tmp_path_factory.mktemp("long") / "long.avi", indexed_frames(1000, size=(16, 48)),
                       fourcc="MJPG")


def seeks(monkeypatch) -> list[int]:
    """Records where `_Reader` seeks to, so a test can check the seek path really ran."""
    calls: list[int] = []
    real = video._Reader._seek

    def spy(self, index):
        calls.append(index)
        return real(self, index)

    monkeypatch.setattr(video._Reader, "_seek", spy)
    return calls


CODECS = [("mp4v", ".mp4"), ("MJPG", ".avi"), ("XVID", ".avi"), ("VP90", ".webm"), ("avc1", ".mp4")]


@pytest.mark.parametrize("fourcc,suffix", CODECS)
def test_frames_are_exact_for_every_codec(tmp_path, fourcc, suffix):
    path = write_video(tmp_path / f"clip{suffix}", indexed_frames(60), fourcc=fourcc)
    frames = video.read_frames(path, ASKED)
    assert frames.shape == (len(ASKED), 64, 64, 3) and frames.dtype == np.uint8
    assert [decode_index(f) for f in frames] == ASKED


@pytest.mark.parametrize("fourcc,suffix", CODECS)
def test_seeking_is_frame_exact_for_every_codec(tmp_path, fourcc, suffix, monkeypatch):
    path = write_video(tmp_path / f"clip{suffix}", indexed_frames(200), fourcc=fourcc)
    monkeypatch.setattr(video, "SEEK_GAP", 10)  # seek on a short file
    sought = seeks(monkeypatch)
    asked = [199, 2, 60, 61, 61, 150, 0, 117]
    assert [decode_index(f) for f in video.read_frames(path, asked)] == asked
    assert sought == [60, 117, 150, 199]


def test_long_video_seeks_at_the_real_gap_and_stays_exact(long_mjpg, monkeypatch):
    sought = seeks(monkeypatch)
    asked = [5, 400, 401, 999, 750]
    assert [decode_index(f) for f in video.read_frames(long_mjpg, asked)] == asked
    assert sought == [400, 750]  # 999 is within SEEK_GAP of 751: grabbed


def test_h264_with_b_frames_seeks_exactly(tmp_path, monkeypatch):
    """x264 reorders frames (B-frames) and puts keyframes far apart: the hard case for seeking."""
    path = write_video_ffmpeg(tmp_path / "x264.mp4", indexed_frames(400),
                              args=("-c:v", "libx264", "-preset", "ultrafast", "-bf", "3", "-g", "100",
                                    "-pix_fmt", "yuv420p"))
    monkeypatch.setattr(video, "SEEK_GAP", 20)
    sought = seeks(monkeypatch)
    asked = [0, 150, 99, 100, 101, 399, 250]
    assert [decode_index(f) for f in video.read_frames(path, asked)] == asked
    assert sought


def test_an_inexact_seek_falls_back_to_reading_in_order(indexed, monkeypatch):
    class Lands5Early:  # a capture whose seeks land 5 frames short of the target
        def __init__(self, cap):
            self.cap = cap

        def set(self, prop, value):
            return self.cap.set(prop, value - 5) if prop == video.cv2.CAP_PROP_POS_FRAMES else self.cap.set(prop, value)

        def __getattr__(self, name):
            return getattr(self.cap, name)

    real_open = video._open
    monkeypatch.setattr(video, "_open", lambda *a, **k: Lands5Early(real_open(*a, **k)))
    monkeypatch.setattr(video, "SEEK_GAP", 10)
    asked = [3, 40, 41, 90, 119]
    assert [decode_index(f) for f in video.read_frames(indexed, asked)] == asked


def test_resize(indexed):
    assert video.read_frames(indexed, [0, 1], size=16).shape == (2, 16, 16, 3)
    frames = video.read_frames(indexed, [7, 77], size=(48, 80))  # (height, width)
    assert frames.shape == (2, 48, 80, 3)
    assert [decode_index(f) for f in frames] == [7, 77]
    with pytest.raises(ValueError, match="size"):
        video.read_frames(indexed, [0], size=0)


def test_probe(indexed):
    info = video.probe(indexed)
    assert (info.frames, info.width, info.height, info.fps) == (120, 64, 64, 25.0)
    assert info.duration == pytest.approx(4.8)
    assert info.path == str(indexed)
    assert video.probe(indexed, exact=True).frames == 120


def test_uniform_indices():
    assert sampling.uniform_indices(100, 4) == [12, 37, 62, 87]  # centres of 4 segments of 25
    assert sampling.uniform_indices(10, 10) == list(range(10))
    assert sampling.uniform_indices(3, 8) == [0, 1, 2]  # short: all frames, the caller pads
    assert sampling.uniform_indices(0, 8) == []
    assert sampling.uniform_indices(7, 1) == [3]
    for total in range(1, 300, 7):
        for num in (1, 3, 16):
            idx = sampling.uniform_indices(total, num)
            assert idx == sorted(set(idx)) and 0 <= idx[0] and idx[-1] < total and len(idx) == min(total, num)
    with pytest.raises(ValueError):
        sampling.uniform_indices(10, 0)


def test_clip_indices():
    clip = sampling.clip_indices(100, 8, stride=4, rng=random.Random(0))
    assert len(clip) == 8 and all(b - a == 4 for a, b in zip(clip, clip[1:])) and 0 <= clip[0] and clip[-1] < 100
    assert clip == sampling.clip_indices(100, 8, stride=4, rng=random.Random(0))  # seeded: repeatable
    starts = {sampling.clip_indices(100, 8, stride=4, rng=random.Random(s))[0] for s in range(50)}
    assert len(starts) > 10 and max(starts) <= 100 - 29  # random start, clip always inside
    rng = random.Random(1)
    short = sampling.clip_indices(20, 8, stride=4, rng=rng)  # 29 frames needed: the stride shrinks to 2
    assert len(short) == 8 and short[-1] < 20 and short[1] - short[0] == 2
    assert sampling.clip_indices(8, 8, stride=3, rng=rng) == list(range(8))  # stride 1
    assert sampling.clip_indices(5, 8, stride=2, rng=rng) == [0, 1, 2, 3, 4]  # too short: all frames
    assert len(sampling.clip_indices(50, 1, stride=4, rng=rng)) == 1
    with pytest.raises(ValueError):
        sampling.clip_indices(50, 4, stride=0, rng=rng)
    assert sampling.clip_indices(100, 8, stride=4) == list(range(35, 64, 4))  # no rng: the centre clip


def test_load_clip_samples_uniformly_centred_and_at_random(indexed):
    frames, length = video.load_clip(indexed, num_frames=4, size=32, sampling="uniform")
    assert frames.shape == (4, 32, 32, 3) and length == 4
    assert [decode_index(f) for f in frames] == [15, 45, 75, 105]
    frames, length = video.load_clip(indexed, num_frames=4, size=None, sampling="random", stride=3,
                                     rng=random.Random(5))
    got = [decode_index(f) for f in frames]
    assert length == 4 and [b - a for a, b in zip(got, got[1:])] == [3, 3, 3]
    frames, _ = video.load_clip(indexed, num_frames=4, size=None, sampling="center", stride=3)
    assert [decode_index(f) for f in frames] == [55, 58, 61, 64]  # 120 frames: the middle 10, every 3rd
    with pytest.raises(ValueError, match="sampling"):
        video.load_clip(indexed, num_frames=4, size=None, sampling="dense")


def test_short_video_is_padded_and_keeps_its_length(tmp_path):
    path = write_video(tmp_path / "short.mp4", indexed_frames(5))
    frames, length = video.load_clip(path, num_frames=8, size=None)
    assert length == 5 and frames.shape[0] == 8
    assert [decode_index(f) for f in frames] == [0, 1, 2, 3, 4, 4, 4, 4]
    assert (frames[5:] == frames[4]).all()


def test_indices_past_the_end_are_dropped(indexed):
    frames = video.read_frames(indexed, [118, 500, 119, 120])
    assert [decode_index(f) for f in frames] == [118, 119]
    with pytest.raises(VideoError, match="none of the frames asked for exist"):
        video.read_frames(indexed, [120, 500])


@pytest.fixture(scope="module")
def truncated_avi(tmp_path_factory):
    """An MJPG AVI cut to its first 40%: the header still says 100 frames, decoding finds about 40."""
    folder = tmp_path_factory.mktemp("cut")
    data = write_video(folder / "whole.avi", indexed_frames(100), fourcc="MJPG").read_bytes()
    path = folder / "cut.avi"
    path.write_bytes(data[: len(data) * 4 // 10])
    return path


def test_a_wrong_frame_count_is_survived(truncated_avi):
    assert video.probe(truncated_avi).frames == 100  # the hint
    real = video.probe(truncated_avi, exact=True).frames
    assert 20 < real < 50
    frames, length = video.load_clip(truncated_avi, num_frames=8, size=None, sampling="uniform")  # sampled again over the real frames
    assert length == 8 and [decode_index(f) for f in frames] == sampling.uniform_indices(real, 8)
    windows = list(video.iter_windows(truncated_avi, window=30, stride=30, num_frames=4, size=None, sampling="uniform"))
    assert windows[0].end == 30 and windows[-1].end == real and windows[-1].length < 4  # cut at the real end
    assert all(w.start < real for w in windows)


def test_windows_cover_the_video_frame_exactly(indexed):
    assert sampling.window_bounds(120, window=40, stride=30) == [(0, 40), (30, 70), (60, 100), (80, 120)]
    assert sampling.window_bounds(120, window=40, stride=40) == [(0, 40), (40, 80), (80, 120)]  # no tail
    assert sampling.window_bounds(10, window=40, stride=5) == [(0, 10)]
    windows = list(video.iter_windows(indexed, window=40, stride=30, num_frames=4, size=None, sampling="uniform"))
    assert [(w.start, w.end) for w in windows] == [(0, 40), (30, 70), (60, 100), (80, 120)]
    assert [decode_index(f) for f in windows[1].frames] == [35, 45, 55, 65]
    assert [decode_index(f) for f in windows[3].frames] == [85, 95, 105, 115]  # the tail window ends at the end
    assert all(w.length == 4 and w.frames.shape == (4, 64, 64, 3) for w in windows)
    (whole,) = video.iter_windows(indexed, window=500, stride=100, num_frames=4, size=16)
    assert (whole.start, whole.end, whole.length, whole.frames.shape) == (0, 120, 4, (4, 16, 16, 3))
    # The default: each window's centre clip at the training stride, as a whole video is sampled.
    centred = list(video.iter_windows(indexed, window=40, stride=30, num_frames=4, size=None, frame_stride=3))
    assert [decode_index(f) for f in centred[1].frames] == [45, 48, 51, 54]  # (30, 70): its middle 10, every 3rd


def test_windows_are_yielded_as_soon_as_read(indexed, monkeypatch):
    """Each window comes out once its last frame is decoded, and only open windows' frames are held."""
    grabbed = []
    real_read = video._Reader.read
    monkeypatch.setattr(video._Reader, "read", lambda self, i: grabbed.append(i) or real_read(self, i))
    it = video.iter_windows(indexed, window=20, stride=20, num_frames=2, size=8, sampling="uniform")
    first = next(it)
    assert (first.start, first.end) == (0, 20) and max(grabbed) == 15  # nothing past window 1 decoded yet
    assert len(list(it)) == 5


def test_short_video_is_one_padded_window(tmp_path):
    path = write_video(tmp_path / "short.avi", indexed_frames(3), fourcc="MJPG")
    (w,) = video.iter_windows(path, window=50, stride=25, num_frames=6, size=None)
    assert (w.start, w.end, w.length) == (0, 3, 3)
    assert [decode_index(f) for f in w.frames] == [0, 1, 2, 2, 2, 2]


def test_grayscale_comes_out_rgb_and_names_may_be_unicode(tmp_path):
    path = write_video(tmp_path / "grey vidéo 灰色.avi", indexed_frames(10), fourcc="MJPG", is_color=False)
    frames = video.read_frames(path, [3, 9])
    assert frames.shape == (2, 64, 64, 3)
    assert (frames[..., 0] == frames[..., 1]).all() and (frames[..., 1] == frames[..., 2]).all()
    assert [decode_index(f) for f in frames] == [3, 9]
    assert video.probe(path).path == str(path)


def test_odd_size_grayscale_stream(tmp_path):
    """OpenCV's writer rounds sizes to even, so ffmpeg writes a true 97×61 one-channel stream."""
    path = write_video_ffmpeg(tmp_path / "odd grey.mkv", indexed_frames(10, size=(61, 97)),
                              args=("-c:v", "ffv1", "-pix_fmt", "gray"))
    info = video.probe(path)
    assert (info.height, info.width, info.frames) == (61, 97, 10)
    frames = video.read_frames(path, [9, 3])
    assert frames.shape == (2, 61, 97, 3) and [decode_index(f) for f in frames] == [9, 3]
    assert video.read_frames(path, [0], size=(31, 49)).shape == (1, 31, 49, 3)


def test_colours_come_out_rgb(tmp_path):
    red = np.zeros((3, 32, 32, 3), np.uint8)
    red[..., 0] = 255
    frames = video.read_frames(write_video(tmp_path / "red.avi", red, fourcc="MJPG"), [1])
    assert frames[0, ..., 0].mean() > 200 and frames[0, ..., 2].mean() < 50


def test_rotation_metadata_gives_upright_frames(tmp_path):
    """A phone video stored sideways with a rotation tag comes out upright, and probe says so."""
    sideways = np.ascontiguousarray(np.rot90(indexed_frames(5, size=(48, 64)), k=1, axes=(1, 2)))  # (5, 64, 48, 3)
    path = tag_rotation(write_video(tmp_path / "phone.mp4", sideways), clockwise=90)
    info = video.probe(path)
    assert (info.height, info.width) == (48, 64)
    frames = video.read_frames(path, [2, 4])
    assert frames.shape == (2, 48, 64, 3) and [decode_index(f) for f in frames] == [2, 4]


def _bad_inputs(tmp_path, indexed) -> dict[str, str]:
    """Each bad file, by name, with words its error must contain."""
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "notes.mp4").write_text("this is text, not a video\n" * 50)
    data = indexed.read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) * 3 // 10])
    avi = write_video(tmp_path / "whole.avi", indexed_frames(10), fourcc="MJPG").read_bytes()
    (tmp_path / "header cut.avi").write_bytes(avi[:300])
    with wave.open(str(tmp_path / "sound.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes(np.zeros(8000, np.int16).tobytes())
    (tmp_path / "folder.mp4").mkdir()
    write_video(tmp_path / "no frames.avi", np.zeros((0, 32, 32, 3), np.uint8), fourcc="MJPG")
    moov = data.index(b"moov") - 4  # keep the index, blank every frame's data
    mdat = data.index(b"mdat") + 4
    (tmp_path / "blank.mp4").write_bytes(data[:mdat] + bytes(moov - mdat) + data[moov:])
    return {
        "missing.mp4": "no such file",
        "folder.mp4": "directory",
        "empty.mp4": "empty file",
        "notes.mp4": "text file",
        "truncated.mp4": "truncated",
        "header cut.avi": "truncated",
        "sound.wav": "no video stream",
        "no frames.avi": "no frame could be decoded",
        "blank.mp4": "no frame could be decoded",
    }


def test_bad_inputs_raise_one_clear_error(tmp_path, indexed):
    for name, reason in _bad_inputs(tmp_path, indexed).items():
        path = tmp_path / name
        for call in (lambda: video.load_clip(path, num_frames=4, size=16), lambda: video.read_frames(path, [0]),
                     lambda: list(video.iter_windows(path, window=8, stride=8, num_frames=2, size=16))):
            with pytest.raises(VideoError) as err:
                call()
            message = str(err.value)
            assert message.startswith(f"{path}: ") and reason in message and "\n" not in message, message
            assert err.value.path == str(path) and reason in err.value.reason


def test_bad_inputs_print_nothing(tmp_path, indexed):
    """No FFmpeg or OpenCV noise reaches the terminal (checked at the file-descriptor level).

    The child opens a good video with plain cv2 first, as other code might, before vidclf.data.video is
    imported: the FFmpeg log level must still be quieted.
    """
    names = list(_bad_inputs(tmp_path, indexed))
    code = (
        "import sys, cv2\n"
        "cv2.VideoCapture(sys.argv[1]).release()\n"
        "from vidclf.data import video\n"
        "for p in sys.argv[2:]:\n"
        "    try: video.load_clip(p, num_frames=4, size=16)\n"
        "    except video.VideoError: pass\n"
        "    else: raise SystemExit(p + ' did not fail')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}  # as a fresh shell has it
    done = subprocess.run([sys.executable, "-c", code, str(indexed), *[str(tmp_path / n) for n in names]],
                          capture_output=True, text=True, env=env)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
