import random
import subprocess
import sys
import wave

import numpy as np
import pytest

from tests.videos import decode_index, indexed_frames, write_video
from vidclf import video
from vidclf.video import VideoError


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("indexed")
    return write_video(folder / "indexed clip ü.mp4", indexed_frames(120))


@pytest.mark.parametrize("fourcc,suffix", [("mp4v", ".mp4"), ("MJPG", ".avi"), ("XVID", ".avi"), ("VP90", ".webm")])
def test_frames_are_exact_for_every_codec(tmp_path, fourcc, suffix):
    path = write_video(tmp_path / f"clip{suffix}", indexed_frames(60), fourcc=fourcc)
    asked = [59, 0, 17, 17, 3, 42]
    frames = video.read_frames(path, asked)
    assert frames.shape == (6, 48, 64, 3) and frames.dtype == np.uint8
    assert [decode_index(f) for f in frames] == asked


def test_resize_and_sparse_seeking_stay_exact(indexed, monkeypatch):
    monkeypatch.setattr(video, "SEEK_GAP", 10)  # force the seek path on a short file
    frames = video.read_frames(indexed, [2, 30, 31, 90, 119], size=(48, 64))
    assert [decode_index(f) for f in frames] == [2, 30, 31, 90, 119]
    small = video.read_frames(indexed, [0, 1], size=16)
    assert small.shape == (2, 16, 16, 3)


def test_probe(indexed):
    info = video.probe(indexed)
    assert (info.frames, info.width, info.height, info.fps) == (120, 64, 48, 25.0)
    assert info.duration == pytest.approx(4.8)
    assert video.probe(indexed, exact=True).frames == 120


def test_uniform_and_random_sampling():
    assert video.uniform_indices(100, 4) == [12, 37, 62, 87]
    assert video.uniform_indices(3, 8) == [0, 1, 2]
    rng = random.Random(0)
    clip = video.random_clip_indices(100, 8, stride=4, rng=rng)
    assert len(clip) == 8 and all(b - a == 4 for a, b in zip(clip, clip[1:])) and clip[-1] < 100
    assert clip == video.random_clip_indices(100, 8, stride=4, rng=random.Random(0))
    short = video.random_clip_indices(20, 8, stride=4, rng=rng)  # 29 frames needed: the stride shrinks
    assert len(short) == 8 and short[-1] < 20 and short[1] - short[0] == 2
    assert video.random_clip_indices(5, 8, stride=2, rng=rng) == [0, 1, 2, 3, 4]


def test_short_video_is_padded_and_keeps_its_length(tmp_path):
    path = write_video(tmp_path / "short.mp4", indexed_frames(5))
    frames, length = video.load_clip(path, num_frames=8, size=None)
    assert length == 5 and frames.shape[0] == 8
    assert [decode_index(f) for f in frames] == [0, 1, 2, 3, 4, 4, 4, 4]


def test_indices_past_the_end_are_dropped(indexed):
    frames = video.read_frames(indexed, [118, 119, 120, 500])
    assert [decode_index(f) for f in frames] == [118, 119]


def test_windows_cover_the_video_frame_exactly(indexed):
    windows = list(video.iter_windows(indexed, window=40, stride=30, num_frames=4, size=None))
    assert [(w.start, w.end) for w in windows] == [(0, 40), (30, 70), (60, 100), (80, 120)]
    assert [decode_index(f) for f in windows[1].frames] == [35, 45, 55, 65]
    assert all(w.length == 4 for w in windows)
    (whole,) = video.iter_windows(indexed, window=500, stride=100, num_frames=4, size=None)
    assert (whole.start, whole.end) == (0, 120)


def test_grayscale_odd_size_and_spaces(tmp_path):
    gray = indexed_frames(10, size=(61, 97))
    path = write_video(tmp_path / "grey video.avi", gray, fourcc="MJPG", is_color=False)
    info = video.probe(path)
    assert abs(info.height - 61) <= 1 and abs(info.width - 97) <= 1  # some codecs round odd sizes to even
    frames = video.read_frames(path, [3, 9])
    assert frames.shape == (2, info.height, info.width, 3)
    assert video.read_frames(path, [3], size=(61, 97)).shape == (1, 61, 97, 3)
    assert [decode_index(f) for f in frames] == [3, 9]


def _bad_inputs(tmp_path, indexed):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "notes.mp4").write_text("this is text, not a video\n" * 50)
    data = indexed.read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 3])
    with wave.open(str(tmp_path / "sound.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes(np.zeros(8000, np.int16).tobytes())
    (tmp_path / "folder.mp4").mkdir()
    return {
        "missing.mp4": "no such file",
        "folder.mp4": "is a directory",
        "empty.mp4": "empty file",
        "notes.mp4": "not a video",
        "truncated.mp4": "",
        "sound.wav": "",
    }


def test_bad_inputs_raise_one_clear_error(tmp_path, indexed):
    for name, reason in _bad_inputs(tmp_path, indexed).items():
        with pytest.raises(VideoError) as err:
            video.load_clip(tmp_path / name, num_frames=4, size=16)
        message = str(err.value)
        assert message.startswith(f"{tmp_path / name}: ") and reason in message and "\n" not in message


def test_bad_inputs_print_nothing(tmp_path, indexed):
    """No FFmpeg or OpenCV noise reaches the terminal (checked at the file-descriptor level)."""
    names = list(_bad_inputs(tmp_path, indexed))
    code = (
        "import sys; from vidclf import video\n"
        "for p in sys.argv[1:]:\n"
        "    try: video.load_clip(p, num_frames=4, size=16)\n"
        "    except video.VideoError: pass\n"
    )
    done = subprocess.run([sys.executable, "-c", code, *[str(tmp_path / n) for n in names]],
                          capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr == "" and done.stdout == ""
