"""feed.py: a batch decoded by a child straight into shared memory is the batch a DataLoader's collate makes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from vidclf.data.datasets import ClipDataset, collate
from vidclf.data.feed import BatchDecoder, stack_as_planes
from vidclf.data.files import Sample
from vidclf.preprocess import Preprocess, channels_first

PRE = Preprocess(num_frames=12, size=32)  # longer than the synth clips' 8 frames: padding shows


def decoding_children() -> set[int]:
    """Live decoding children of this process (zombies are dead already)."""
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state, ppid = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:2]
        except OSError:
            continue
        if b"vidclf.data.decoder" in cmdline and state != "Z" and int(ppid) == os.getpid():
            found.add(int(pid))
    return found


@pytest.mark.parametrize("views", [(1, 1), (2, 1)])
def test_a_batch_equals_what_collate_makes_from_the_same_clips(synth_data, tmp_path, views):
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    paths = sorted(map(str, synth_data.rglob("*.mp4")))[:5]
    paths.insert(2, str(bad))
    dataset = ClipDataset([Sample(p, 0) for p in paths], PRE, threads=1, views=views)
    expected = [collate([dataset[i] for i in keys], pad_to=PRE.num_frames) for keys in (range(3), range(3, 6))]
    dataset.decoder.close()  # the reference's own child
    before = decoding_children()
    with BatchDecoder(dataset, batch_size=3) as decoder:
        for keys, e in zip((range(3), range(3, 6)), expected):
            g = decoder.decode(keys)  # lives in the decoder's memory until the next decode: compared now
            assert g.clips.shape == e.clips.shape and torch.equal(g.clips, e.clips)  # zero after each length, too
            assert channels_first(g.clips).is_contiguous()  # frame planes first: preprocessing reads them in order
            assert torch.equal(g.lengths, e.lengths) and torch.equal(g.indices, e.indices) and g.views == e.views
            assert [f.path for f in g.failures] == [f.path for f in e.failures]
        assert len(decoding_children() - before) == 1
    assert [f.index for f in expected[0].failures] == [2] and expected[0].views == (3 if views == (2, 1) else 1)
    assert not decoding_children() - before  # closed with the decoder


def test_stack_as_planes_is_np_stack_laid_out_planes_first():
    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 256, (4, 6, 8, 3), dtype=np.uint8) for _ in range(3)]
    batch = stack_as_planes(clips)
    assert np.array_equal(batch, np.stack(clips))
    assert channels_first(torch.from_numpy(batch)).is_contiguous()
