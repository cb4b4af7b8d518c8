import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from vidclf.data.cache import ClipCache
from vidclf.data.datasets import Clip, ClipDataset, EpochSampler, Failure, collate
from vidclf.data.files import Sample, scan, stratified_split
from vidclf.errors import DatasetError
from vidclf.preprocess import Preprocess


def _touch_videos(root: Path, names: dict[str, int]) -> None:
    for cls, n in names.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / cls / f"{i}.mp4").write_bytes(b"x")


def test_class_folders_split_is_stratified_and_seeded(tmp_path):
    _touch_videos(tmp_path, {"b": 10, "a": 5, "c": 2})
    (tmp_path / "a" / "notes.txt").write_text("not a video")
    splits = scan(tmp_path, val_split=0.2, seed=1)
    assert splits.classes == ["a", "b", "c"]
    val_per_class = [sum(s.label == i for s in splits.val) for i in range(3)]
    assert val_per_class == [1, 2, 1]  # 20% of each class, at least one of a class with two clips
    assert len(splits.train) + len(splits.val) == 17
    assert not {s.path for s in splits.train} & {s.path for s in splits.val}
    assert scan(tmp_path, val_split=0.2, seed=1) == splits
    assert scan(tmp_path, val_split=0.2, seed=2).val != splits.val


def test_train_val_test_folders(tmp_path):
    _touch_videos(tmp_path / "train", {"run": 3, "walk": 3})
    _touch_videos(tmp_path / "val", {"run": 1, "walk": 1})
    _touch_videos(tmp_path / "test", {"run": 2, "swim": 1})
    splits = scan(tmp_path)
    assert splits.classes == ["run", "swim", "walk"]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6, 2, 3)
    assert {s.label for s in splits.test} == {0, 1}


def test_manifest_paths_are_relative_to_the_csv(tmp_path):
    _touch_videos(tmp_path / "clips", {"x": 2})
    manifest = tmp_path / "lists" / "all.csv"
    manifest.parent.mkdir()
    with manifest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        w.writerow(["../clips/x/0.mp4", "cat", "train"])
        w.writerow(["../clips/x/1.mp4", "dog", "test"])
    splits = scan(manifest)
    assert splits.classes == ["cat", "dog"]
    assert splits.train == [Sample(str(manifest.parent / "../clips/x/0.mp4"), 0)]
    assert splits.test[0].label == 1 and Path(splits.test[0].path).exists()


def test_bad_manifest_and_missing_root_name_the_file(tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_text("file,class\na.mp4,x\n")
    with pytest.raises(DatasetError, match="m.csv: a manifest needs a header"):
        scan(bad)
    with pytest.raises(DatasetError, match="nowhere: no such dataset"):
        scan(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="val-split"):
        stratified_split([Sample("a", 0)], 1.5, 0)


def test_collate_pads_to_the_longest_clip_and_keeps_lengths():
    a = np.full((3, 4, 4, 3), 7, dtype=np.uint8)
    b = np.full((5, 4, 4, 3), 9, dtype=np.uint8)
    batch = collate([Clip(a, 3, 1, 0), Failure("bad.mp4", "bad.mp4: broken", 1), Clip(b, 5, 0, 2)])
    assert batch.clips.shape == (2, 5, 4, 4, 3) and batch.clips.dtype == torch.uint8  # channels last, as decoded
    assert batch.lengths.tolist() == [3, 5] and batch.labels.tolist() == [1, 0] and batch.indices.tolist() == [0, 2]
    assert (batch.clips[0, :3] == 7).all() and (batch.clips[0, 3:] == 0).all()
    assert batch.failures == [Failure("bad.mp4", "bad.mp4: broken", 1)]
    assert collate([Clip(a, 3, 1, 0)], pad_to=8).clips.shape[1] == 8


def test_dataset_serves_uint8_clips_and_reports_bad_videos(synth_data, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_text("not a video")
    good = next(synth_data.rglob("*.mp4"))
    pre = Preprocess(num_frames=8, size=24)
    ds = ClipDataset([Sample(str(good), 2), Sample(str(bad), 1)], pre)
    clip, length, label, index, failures, _ = ds[0]
    assert not failures and clip.dtype == np.uint8 and clip.shape == (8, 24, 24, 3) and (length, label, index) == (8, 2, 0)
    failure = ds[1]
    assert isinstance(failure, Failure) and "broken.mp4" in failure.reason and failure.index == 1


def test_random_clips_replay_for_the_same_epoch(synth_data):
    good = str(next(synth_data.rglob("*.mp4")))
    ds = ClipDataset([Sample(good, 0)], Preprocess(num_frames=3, size=16), train=True, seed=5)
    assert np.array_equal(ds[(0, 4)][0], ds[(0, 4)][0])


def test_epoch_sampler_is_seeded_resumable_and_shards_ranks():
    s = EpochSampler(10, shuffle=True, seed=3)
    s.set_epoch(2)
    order = list(s)
    assert sorted(i for i, _, _ in order) == list(range(10)) and all(e == 2 and draw == 0 for _, e, draw in order)
    s.set_epoch(2, skip=4)
    assert list(s) == order[4:] and len(s) == 6
    s.set_epoch(3)
    assert list(s) != order
    ranks = [EpochSampler(10, shuffle=True, seed=3, rank=r, world=2) for r in range(2)]
    for r in ranks:
        r.set_epoch(2)
    shards = [[i for i, _, _ in r] for r in ranks]
    assert len(shards[0]) == len(shards[1]) == 5 and sorted(shards[0] + shards[1]) == list(range(10))


def test_loader_workers_start_after_opencv_ran_in_this_process(synth_data):
    """A forked worker must not hang when the parent already used OpenCV's thread pool."""
    import subprocess
    import sys

    clip = next(Path(synth_data).rglob("*.mp4"))
    script = f"""
import cv2, numpy as np, torch
from vidclf.data.datasets import ClipDataset, clip_loader
from vidclf.data.files import Sample
from vidclf.preprocess import Preprocess
cv2.warpAffine(np.zeros((512, 512, 3), np.uint8), np.eye(2, 3), (512, 512))  # starts OpenCV's thread pool
loader = clip_loader(ClipDataset([Sample({str(clip)!r}, 0)], Preprocess(num_frames=4, size=16)), batch_size=1,
                     workers=1, device=torch.device("cpu"), pad_to=4)
print(next(iter(loader)).clips.shape)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "torch.Size([1, 4, 16, 16, 3])" in done.stdout


def _bad_and_good(synth_data, tmp_path, bad: int, good: int) -> list[Sample]:
    samples = [Sample(str(p), 0) for p in sorted(synth_data.rglob("*.mp4"))[:good]]
    for i in range(bad):
        (tmp_path / f"bad{i}.mp4").write_text("not a video")
        samples.append(Sample(str(tmp_path / f"bad{i}.mp4"), 1))
    return sorted(samples)


def test_training_replaces_a_bad_video_with_a_readable_one_the_same_way_every_time(synth_data, tmp_path):
    samples = _bad_and_good(synth_data, tmp_path, bad=3, good=3)
    ds = ClipDataset(samples, Preprocess(num_frames=4, size=16), train=True, seed=1)
    bad = next(i for i, s in enumerate(samples) if "bad" in s.path)
    item = ds[(bad, 2)]
    assert isinstance(item, Clip) and "bad" not in samples[item.index].path and item.label == 0
    assert item.failures and item.failures[0].path == samples[bad].path and "text file" in item.failures[0].reason
    again = ClipDataset(samples, Preprocess(num_frames=4, size=16), train=True, seed=1)[(bad, 2)]  # a fresh worker
    assert again.index == item.index and np.array_equal(again.frames, item.frames)
    chosen = {ds[(bad, epoch)].index for epoch in range(12)}
    assert len(chosen) > 1  # the replacement is drawn per epoch, not always the same neighbour


def test_training_with_nothing_readable_gives_failures(tmp_path, synth_data):
    samples = _bad_and_good(synth_data, tmp_path, bad=3, good=0)
    batch = collate([ClipDataset(samples, Preprocess(num_frames=4, size=16), train=True)[(i, 0)] for i in range(3)])
    assert len(batch.lengths) == 0 and len(batch.failures) == 3


def test_evaluation_never_replaces_and_sharding_without_padding_serves_each_key_once():
    ranks = [EpochSampler(7, shuffle=False, rank=r, world=3, pad=False) for r in range(3)]
    keys = [k for r in ranks for k, _, _ in r]
    assert sorted(keys) == list(range(7)) and [len(r) for r in ranks] == [3, 2, 2]
    padded = [list(EpochSampler(7, shuffle=True, rank=r, world=3)) for r in range(3)]
    assert [len(p) for p in padded] == [3, 3, 3]  # training: equal steps on every rank


def test_a_file_gone_since_the_scan_is_a_failure_not_a_crash(synth_data, tmp_path):
    """The cache stats each file for its key; a file deleted (or on a mount that died) must not kill a worker."""
    gone = tmp_path / "gone.mp4"
    good = [Sample(str(p), 0) for p in sorted(synth_data.rglob("*.mp4"))[:2]]
    cache = ClipCache(tmp_path / "cache", max_bytes=10**9)
    ds = ClipDataset([Sample(str(gone), 0), *good], Preprocess(num_frames=4, size=16), train=True, cache=cache)
    item = ds[(0, 0)]
    assert isinstance(item, Clip) and item.failures[0].path == str(gone)
    assert "cannot be read (No such file or directory)" in item.failures[0].reason
    failure = ClipDataset([Sample(str(gone), 0)], Preprocess(num_frames=4, size=16), cache=cache)[0]
    assert isinstance(failure, Failure)
