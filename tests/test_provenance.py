"""Decode provenance: training checkpoints record the OpenCV/FFmpeg build; predict, evaluate and stream warn
once when theirs differs (and not for checkpoints without the record); `summary --model` shows it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from vidclf import checkpoint
from vidclf.cli import app
from vidclf.data.provenance import decoder_build, decoder_change, describe, ffmpeg_libraries

BUILD_INFORMATION = """
General configuration for OpenCV 4.10.0 =====================================
  Video I/O:
    DC1394:                      NO
    FFMPEG:                      YES
      avcodec:                   YES (59.37.100)
      avformat:                  YES (59.27.100)
      avutil:                    YES (57.28.100)
      swscale:                   YES (6.7.100)
      avresample:                NO
    GStreamer:                   YES (1.22.0)
    v4l/v4l2:                    YES (linux/videodev2.h)

  Parallel framework:            pthreads
"""
OLD_BUILD = {"opencv": "4.10.0", "avcodec": "59.37.100", "avformat": "59.27.100", "avutil": "57.28.100",
             "swscale": "6.7.100"}
runner = CliRunner()


def test_the_ffmpeg_libraries_of_the_video_io_section_are_read():
    assert ffmpeg_libraries(BUILD_INFORMATION) == {k: v for k, v in OLD_BUILD.items() if k != "opencv"}
    assert ffmpeg_libraries("  Video I/O:\n    FFMPEG:    NO\n    GStreamer:   YES (1.22.0)\n") == {}
    assert describe({"opencv": "4.10.0"}) == "OpenCV 4.10.0 without FFmpeg"


def test_this_process_s_build_comes_from_opencv_itself():
    import cv2

    build = decoder_build()
    assert build["opencv"] == cv2.__version__
    assert set(build) - {"opencv"} == set(ffmpeg_libraries(cv2.getBuildInformation()))


def test_decoder_change_names_what_differs():
    current = decoder_build()
    assert decoder_change(current) is None and decoder_change(None) is None
    changed = decoder_change({**current, "opencv": "0.1", "avcodec": "1.2.3"})
    assert changed == f"opencv 0.1 → {current['opencv']}, avcodec 1.2.3 → {current.get('avcodec', 'none')}"


def test_only_training_checkpoints_record_the_decoder(tmp_path):
    base = {"model": {"name": "cnn-lstm"}, "classes": ["a"], "preprocess": {}, "state_dict": {}}
    checkpoint.save({**base, "train_config": {}}, tmp_path / "train.pt")
    checkpoint.save(base, tmp_path / "other.pt")
    checkpoint.save({**base, "train_config": {}, "decoder": OLD_BUILD}, tmp_path / "given.pt")
    assert checkpoint.load(tmp_path / "train.pt")["decoder"] == decoder_build()  # loads with weights_only=True
    assert "decoder" not in checkpoint.load(tmp_path / "other.pt")
    assert checkpoint.load(tmp_path / "given.pt")["decoder"] == OLD_BUILD


def test_a_trained_checkpoint_records_this_decoder(trained):
    assert checkpoint.load(trained)["decoder"] == decoder_build()


@pytest.fixture(scope="module")
def variants(trained, tmp_path_factory) -> dict[str, Path]:
    """The trained checkpoint as recorded ("same"), as if trained on another build ("other") and as an
    older vidclf wrote it, without the record ("old")."""
    folder = tmp_path_factory.mktemp("provenance")
    saved = checkpoint.load(trained)
    paths = {}
    for name, decoder in (("same", decoder_build()), ("other", OLD_BUILD), ("old", None)):
        paths[name] = folder / f"{name}.pt"
        ckpt = {k: v for k, v in saved.items() if k != "decoder"}
        torch.save(ckpt if decoder is None else {**ckpt, "decoder": decoder}, paths[name])
    return paths


def _warnings(stderr: str) -> int:
    return " ".join(stderr.split()).count("was trained on frames from another decoder")


@pytest.mark.parametrize("command", ["predict", "evaluate", "stream"])
def test_commands_warn_once_when_the_decoder_differs(variants, synth_data, command):
    clip = str(next(synth_data.rglob("*.mp4")))
    args = {"predict": ["predict", clip, "--format", "jsonl", "--workers", "0"],
            "evaluate": ["evaluate", "--data", str(synth_data), "--workers", "0", "--clips", "1", "--format", "json"],
            "stream": ["stream", clip, "--hop", "0.1"]}[command]
    for name, expected in (("other", 1), ("same", 0), ("old", 0)):
        result = runner.invoke(app, [*args, "--model", str(variants[name]), "--device", "cpu"])
        assert result.exit_code == 0, result.output
        assert _warnings(result.stderr) == expected, (name, result.stderr)
    result = runner.invoke(app, [*args, "--model", str(variants["other"]), "--device", "cpu"])
    text = " ".join(result.stderr.split())
    assert (f"warning {variants['other']} was trained on frames from another decoder (opencv 4.10.0 → "
            f"{decoder_build()['opencv']}") in text and "its accuracy on frames decoded here may differ" in text
    quiet = runner.invoke(app, [*args, "--model", str(variants["other"]), "--device", "cpu", "--quiet"])
    assert _warnings(quiet.stderr) == 0


def test_summary_of_a_checkpoint_shows_its_decoder(variants):
    result = runner.invoke(app, ["summary", "--model", str(variants["other"])])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "GFLOP" in text and f"{variants['other']}: 3 classes; started from scratch; training frames decoded by {describe(OLD_BUILD)}" in text
    assert "OpenCV 4.10.0 with avcodec 59.37.100, avformat 59.27.100, avutil 57.28.100, swscale 6.7.100" in text
    old = runner.invoke(app, ["summary", "--model", str(variants["old"])])
    assert old.exit_code == 0 and "the decoder of its training frames is not recorded" in " ".join(old.stdout.split())
