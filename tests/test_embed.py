"""`vidclf embed`: one vector per video, the model's features before its head, in input order."""

from __future__ import annotations

import json

import numpy as np
import torch

from tests.test_cli import invoke


def _reference(trained, paths) -> torch.Tensor:
    """forward_features of each centre clip, computed here without vidclf's batching."""
    from vidclf.checkpoint import load_classifier
    from vidclf.preprocess import to_model_input
    from vidclf.data.video import load_clip

    clf = load_classifier(trained, device=torch.device("cpu"))
    pre = clf.preprocess
    rows = []
    for path in paths:
        frames, length = load_clip(path, num_frames=pre.num_frames, size=pre.size, sampling=pre.sampling,
                                   stride=pre.frame_stride)
        clip = torch.from_numpy(frames[:length]).permute(0, 3, 1, 2)[None]  # (1, T, 3, H, W)
        lengths = torch.tensor([length])
        with torch.inference_mode():
            rows.append(clf.model.forward_features(to_model_input(clip, lengths, pre), lengths)[0])
    return torch.stack(rows)


def test_embed_jsonl_gives_forward_features_in_input_order(trained, synth_data, tmp_path):
    clips = sorted(map(str, synth_data.rglob("*.mp4")))[:5]
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    result = invoke("embed", clips[0], bad, *clips[1:], "--model", trained, "--workers", "0", "--batch-size", "2",
                    "--clips", "1")  # the centre clip, as the reference computes it
    assert result.exit_code == 1, result.output  # one input could not be read
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["path"] for r in records] == [clips[0], str(bad), *clips[1:]]
    assert records[1]["embedding"] is None and "text file" in records[1]["error"]
    got = torch.tensor([r["embedding"] for r in records if r["error"] is None])
    assert got.shape == (5, 128)  # the CNN+LSTM's hidden size
    assert torch.allclose(got, _reference(trained, clips), atol=1e-5)


def test_embed_npy_writes_an_array_and_its_paths(trained, synth_data, tmp_path):
    clips = sorted(map(str, synth_data.rglob("*.mp4")))[:4]
    out = tmp_path / "vectors"
    result = invoke("embed", *clips, "--model", trained, "--format", "npy", "--output", out, "--workers", "0",
                    "--clips", "1")
    assert result.exit_code == 0, result.output
    array = np.load(out)
    assert array.dtype == np.float32 and array.shape == (4, 128)
    assert (tmp_path / "vectors.paths.txt").read_text().splitlines() == clips
    assert np.allclose(array, _reference(trained, clips).numpy(), atol=1e-5)
    assert invoke("embed", *clips, "--model", trained, "--format", "npy").exit_code == 2  # needs --output


def test_embed_output_resumes_and_shards(trained, synth_data, tmp_path):
    clips = sorted(map(str, synth_data.rglob("*.mp4")))[:6]
    out = tmp_path / "part1.jsonl"
    first = invoke("embed", *clips[:2], "--model", trained, "--shard", "1/2", "--output", out, "--workers", "0")
    assert first.exit_code == 0, first.output
    again = invoke("embed", *clips, "--model", trained, "--shard", "1/2", "--output", out, "--resume", "--workers", "0")
    assert again.exit_code == 0, again.output
    assert [json.loads(line)["path"] for line in out.read_text().splitlines()] == clips[1::2]
