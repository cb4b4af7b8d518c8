"""Batches for predict and embed, decoded by one watched child straight into shared memory.

A DataLoader suits training. For inference it handed each clip across two processes as a pickle
(decoding child → worker → here: 1.3–2.7 ms of wake-ups a 16-frame clip at 64² on the 2-core
machine, about as long as decoding it) and collate copied it once more (issue 31). Here the batch's
files are sent to the decoding child ahead (the watchdog of `decoder.py`: a stalled file still never
hangs the job), which writes each clip into its place in a batch in memory it shares with this
process, and the model reads the batch where it lies. The batch is kept frame planes first,
(T, 3, H, W) a clip: the child's copy turns each frame round (0.09 ms a clip), and the preprocessing
then reads contiguous planes, 0.59 against 1.03 ms a clip on one thread. `vidclf/lanes.py` runs one
of these per lane.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from vidclf.data.datasets import Batch, Clip, ClipDataset, Failure
from vidclf.data.decoder import Decoder
from vidclf.data.shared import SharedArena


class BatchDecoder:
    """Decodes batches of up to `batch_size` keys of an evaluation `dataset` through a child of its own.

    The batch it returns lives in this decoder's memory until the next `decode`: use it (or copy it)
    before then. `close()` ends the child.
    """

    def __init__(self, dataset: ClipDataset, batch_size: int):
        *views, T, H, W, C = dataset.frames_shape()  # ([V,] T, H, W, 3)
        self.views = views[0] if views else 1
        self._arena = SharedArena(batch_size * self.views * math.prod((T, C, H, W)))
        self._planes = self._arena.array((batch_size, self.views, T, C, H, W), 0)
        self._dataset = dataset.with_decoder(Decoder(dataset.decoder.timeout, shared=self._arena))

    def decode(self, indices: Sequence[int]) -> Batch:
        """The Batch `collate` would make of these keys' clips (zero after each clip's length), without a copy
        unless a video failed (the others' rows are then gathered)."""
        if len(indices) > len(self._planes):
            raise ValueError(f"a batch of {len(indices)} does not fit this decoder's {len(self._planes)}")
        items = self._dataset.clips_into(indices, [_as_decoded(p if self.views > 1 else p[0]) for p in self._planes])
        for item, planes in zip(items, self._planes):
            if isinstance(item, Clip):
                planes[:, item.length :] = 0  # (V, T, 3, H, W): the frames after the clip's length
        good = [p for p, it in enumerate(items) if isinstance(it, Clip)]
        planes = self._planes[: len(items)] if len(good) == len(items) else self._planes[good]
        rows = _as_decoded(planes.reshape(-1, *planes.shape[2:]))  # (B·V, T, H, W, 3): a video's views consecutive
        per_row = [items[p] for p in good for _ in range(self.views)]
        return Batch(
            torch.from_numpy(rows),
            torch.tensor([it.length for it in per_row], dtype=torch.long),
            torch.tensor([it.label for it in per_row], dtype=torch.long),
            torch.tensor([it.index for it in per_row], dtype=torch.long),
            [it for it in items if isinstance(it, Failure)],
            views=self.views,
        )

    def close(self) -> None:
        self._dataset.decoder.close()
        self._arena.close()

    def __enter__(self) -> BatchDecoder:
        return self

    def __exit__(self, *_) -> None:
        self.close()


def stack_as_planes(clips: Sequence[np.ndarray]) -> np.ndarray:
    """Clips (T, H, W, 3) as one batch (B, T, H, W, 3) laid out frame planes first, as `BatchDecoder`'s
    batches are: one copy, after which the preprocessing reads contiguous planes."""
    T, H, W, C = clips[0].shape
    batch = _as_decoded(np.empty((len(clips), T, C, H, W), np.uint8))
    for row, clip in zip(batch, clips):
        row[...] = clip
    return batch


def _as_decoded(planes: np.ndarray) -> np.ndarray:
    """(…, T, 3, H, W) frame planes seen as decoded frames, (…, T, H, W, 3): a view."""
    return np.moveaxis(planes, -3, -1)
