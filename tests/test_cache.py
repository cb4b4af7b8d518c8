"""The decode cache: JPEG entries that serve what a decode would (within JPEG's error), a bound that
never costs more decoding than no cache, stale and corrupt entries decoded again, a full disk survived."""

import errno
import os
import random

import numpy as np
import pytest

from vidclf.data import entry as entry_mod
from vidclf.data import datasets, video
from vidclf.data.cache import ClipCache, parse_size, settings_key
from vidclf.data.datasets import ClipDataset
from vidclf.data.decoder import Decoder
from vidclf.preprocess import Preprocess
from vidclf.data.files import Sample

PRE = Preprocess(num_frames=4, size=16)
SETTINGS = settings_key(PRE.size, PRE.interpolation)


@pytest.fixture
def calls(monkeypatch):
    """Counts of whole-video writes and one-clip decodes, made in this process (no decoding child)."""
    counts = {"whole": [], "clip": []}
    write, load = datasets.write_entry, video.load_clip
    monkeypatch.setattr(datasets, "write_entry", lambda path, *a, **k: counts["whole"].append(path) or write(path, *a, **k))
    monkeypatch.setattr(video, "load_clip", lambda path, *a, **k: counts["clip"].append(path) or load(path, *a, **k))
    return counts


def _videos(synth_data, n: int) -> list[Sample]:
    return [Sample(str(p), 0) for p in sorted(synth_data.rglob("*.mp4"))[:n]]


def _dataset(samples, folder, max_bytes=10**9, *, train=True, keep=None, **kw) -> ClipDataset:
    names = [ClipCache.name(s.path, SETTINGS) for s in (samples if keep is None else keep)]
    return ClipDataset(samples, PRE, train=train, cache=ClipCache(folder, max_bytes, keep=names),
                       decoder=Decoder(timeout=None), **kw)


def test_a_cold_draw_is_exactly_the_warm_one_and_close_to_a_decode(synth_data, tmp_path):
    """The decoding child writes the entry; the clip comes back from it, as every later epoch reads it."""
    path = _videos(synth_data, 1)[0].path
    ds = ClipDataset([Sample(path, 0)], PRE, train=True, cache=ClipCache(tmp_path / "c", 10**9))  # a real child
    cold = ds[(0, 3)].frames
    assert len(list((tmp_path / "c").rglob("*.jpgs"))) == 1
    assert np.array_equal(ds[(0, 3)].frames, cold)
    start = ds.cache.read(path, SETTINGS, lambda total: [0])  # the same clip decoded from the video:
    assert start is not None
    idx = datasets.sample_indices(video.probe(path).frames, 4, sampling="random", stride=1,
                                  rng=random.Random(f"{ds.seed}|3|0"))
    decoded = video.read_frames(path, idx, size=16)
    assert cold.shape == decoded.shape == (4, 16, 16, 3)
    assert np.abs(cold.astype(int) - decoded).mean() < 4  # JPEG q95 moves pixels by a few levels


def test_warm_epochs_decode_nothing_and_stale_or_corrupt_entries_are_decoded_again(synth_data, tmp_path, calls):
    src = _videos(synth_data, 1)[0].path
    path = tmp_path / "clip.mp4"
    path.write_bytes(open(src, "rb").read())
    ds = _dataset([Sample(str(path), 0)], tmp_path / "c", train=False)
    first = ds[0].frames
    assert len(calls["whole"]) == 1 and not calls["clip"]
    assert np.array_equal(ds[0].frames, first) and len(calls["whole"]) == 1  # warm: nothing decoded

    (entry,) = (tmp_path / "c").rglob("*.jpgs")
    entry.write_bytes(entry.read_bytes()[:100])  # corrupt (cut short): decoded again, and replaced
    assert np.array_equal(ds[0].frames, first) and len(calls["whole"]) == 2
    os.utime(path, ns=(1, 1))  # the video changed: its entry is stale
    ds[0]
    assert len(calls["whole"]) == 3 and len(list((tmp_path / "c").rglob("*.jpgs"))) == 1


@pytest.mark.parametrize("told", [True, False])
def test_a_set_larger_than_the_bound_never_decodes_a_video_whole_that_it_does_not_keep(synth_data, tmp_path, calls,
                                                                                       told):
    """Told its dataset (as training tells it) or not, the cache keeps what this run put in it."""
    samples = _videos(synth_data, 12)
    probe = _dataset(samples[:1], tmp_path / "probe")
    probe[(0, 0)]
    entry = ClipCache(tmp_path / "probe", 10**9).size()
    calls["whole"].clear()
    ds = _dataset(samples, tmp_path / "c", max_bytes=int(4.5 * entry), keep=None if told else [])  # room for 4 of 12
    for epoch in range(3):
        for i in random.Random(epoch).sample(range(12), 12):
            ds[(i, epoch)]
        assert ds.cache.size() <= ds.cache.max_bytes
    kept = list((tmp_path / "c").rglob("*.jpgs"))
    assert len(kept) == 4 and ds.cache.full
    assert len(calls["whole"]) == 4  # each kept video decoded whole once, and no other
    assert len(calls["clip"]) == 3 * 12 - 2 * 4 - 4  # every other draw: one clip, as without a cache


def test_other_datasets_entries_make_room_least_recently_used_first_and_old_formats_first(synth_data, tmp_path,
                                                                                         calls):
    samples = _videos(synth_data, 8)
    folder = tmp_path / "c"
    (folder / "ab").mkdir(parents=True)
    old = folder / "ab" / ("ab" + "0" * 38 + ".npy")  # an entry of the raw format of earlier versions
    old.write_bytes(b"\x93NUMPY" + bytes(2000))
    os.utime(old, (0, 0))
    a = _dataset(samples[:4], folder)
    for i in range(4):
        a[(i, 0)]
    entry = sum(p.stat().st_size for p in folder.rglob("*.jpgs")) / 4
    for age, p in enumerate(sorted(folder.rglob("*.jpgs"))):
        os.utime(p, (1000 + age, 1000 + age))  # used before b's run started, a while ago
    b = _dataset(samples[4:], folder, max_bytes=int(5.5 * entry))
    for i in range(4):
        b[(i, 0)]
    assert not old.exists()  # the oldest entry went first
    names = {p.name for p in folder.rglob("*.jpgs")}
    assert {ClipCache.name(s.path, SETTINGS) for s in samples[4:]} <= names  # b's working set, all of it
    assert len(names) <= 5 and b.cache.size() <= b.cache.max_bytes and len(calls["whole"]) == 8


def test_a_full_disk_turns_the_cache_off_with_one_warning_and_clips_are_still_served(synth_data, tmp_path,
                                                                                    monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(entry_mod, "write_atomic", disk_full)
    ds = _dataset(_videos(synth_data, 2), tmp_path / "c", train=False)
    first, second = ds[0], ds[1]
    assert first.frames.shape == (4, 16, 16, 3) and second.frames.shape == (4, 16, 16, 3)
    assert "No space left on device" in first.warning and second.warning == first.warning
    assert not list((tmp_path / "c").rglob("*.tmp"))
    assert not ClipCache(tmp_path / "file.txt" / "cache", max_bytes=1).usable() or os.geteuid() == 0


def test_a_half_written_entry_is_never_read_and_clearing_removes_only_the_caches_files(synth_data, tmp_path):
    samples = _videos(synth_data, 2)
    ds = _dataset(samples, tmp_path / "c")
    ds[(0, 0)]
    (entry,) = (tmp_path / "c").rglob("*.jpgs")
    tmp = entry.parent / f".{ClipCache.name(samples[1].path, SETTINGS)}.x1y2.tmp"
    tmp.write_bytes(entry.read_bytes()[:200])  # a writer killed mid-write
    assert ds.cache.read(samples[1].path, SETTINGS, lambda n: [0]) is None
    (tmp_path / "c" / "notes.txt").write_text("a user's file")
    assert ds.cache.count() == (1, 0)
    assert ds.cache.clear() > 0
    assert not list((tmp_path / "c").rglob("*.jpgs")) and not tmp.exists() and (tmp_path / "c" / "notes.txt").exists()


def test_cache_size_units():
    assert parse_size("500MB") == 500 * 10**6 and parse_size("20GB") == 20 * 10**9
    assert parse_size("1.5GiB") == int(1.5 * 2**30) and parse_size("0") == 0
    with pytest.raises(ValueError, match="--cache-size"):
        parse_size("lots")


def test_worker_processes_share_one_bound(synth_data, tmp_path):
    import torch

    from vidclf.data.datasets import EpochSampler, clip_loader

    samples = _videos(synth_data, 12)
    probe = _dataset(samples[:1], tmp_path / "probe")
    probe[(0, 0)]
    entry = ClipCache(tmp_path / "probe", 10**9).size()
    ds = ClipDataset(samples, PRE, train=True, cache=ClipCache(tmp_path / "c", int(4.5 * entry)))
    sampler = EpochSampler(len(samples), shuffle=True)
    loader = clip_loader(ds, batch_size=2, workers=2, device=torch.device("cpu"), pad_to=4, sampler=sampler)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        assert sum(len(b.lengths) for b in loader) == 12
    assert ds.cache.size() <= ds.cache.max_bytes and len(list((tmp_path / "c").rglob("*.jpgs"))) == 4


def test_a_video_that_fails_while_its_entry_is_written_gives_its_reservation_back(synth_data, tmp_path, monkeypatch):
    def broken(path, *args, **kwargs):
        raise video.VideoError(path, "the decoder crashed on this file")

    samples = _videos(synth_data, 2)
    ds = _dataset(samples, tmp_path / "c")
    ds[(0, 0)]
    used = int((tmp_path / "c" / ".used").read_text())
    monkeypatch.setattr(datasets, "write_entry", broken)
    failure = ds[(1, 0)]
    assert "crashed" in failure.failures[0].reason
    assert int((tmp_path / "c" / ".used").read_text()) == used == ds.cache.size()


def test_train_with_a_cache_smaller_than_the_set_stays_within_it_and_says_so(synth_data, tmp_path):
    from tests.test_cli import invoke

    result = invoke("train", "--data", synth_data, "--epochs", "2", "--frames", "8", "--size", "32", "--batch-size",
                    "4", "--workers", "0", "--cache", tmp_path / "c", "--cache-size", "40kB", "--out", tmp_path / "m")
    assert result.exit_code == 0, result.output
    assert ClipCache(tmp_path / "c", 0).size() <= 40_000
    assert "of this run's 18 videos; the others are decoded a clip at a time" in result.stderr


def test_frames_of_another_decoder_build_are_never_read(monkeypatch):
    """A checkpoint records this process's decoder: its training frames must not come from another build's entries."""
    here = settings_key(64, "area")
    monkeypatch.setattr("vidclf.data.provenance.decoder_build", lambda: {"opencv": "0.0.1", "avcodec": "1.0"})
    assert settings_key(64, "area") != here
    assert ClipCache.name("v.mp4", settings_key(64, "area")) != ClipCache.name("v.mp4", here)
