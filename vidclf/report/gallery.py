"""Which videos a report shows, and what of them: the errors most confident first, the correct videos
least confident first (a multi-label model's false positives and false negatives, most confident
first), the clips the model saw of each, and each one's nearest training videos.
"""

from __future__ import annotations

from typing import Callable, Iterator, NamedTuple

import numpy as np
import torch

from vidclf import distributed
from vidclf.checkpoint import Classifier
from vidclf.data.decoder import Decoder
from vidclf.data.files import Sample


class Pick(NamedTuple):
    shown: list[int]  # dataset indices, in the order the gallery shows them
    total: int  # videos of this kind, shown or not


class Neighbour(NamedTuple):
    path: str
    label: int
    similarity: float  # cosine of the two embeddings


def pick(probabilities: torch.Tensor, labels: torch.Tensor, *, limit: int) -> tuple[Pick, Pick]:
    """(errors, most confident first; correct videos, least confident first), `limit` of each.

    Confidence is the probability of the predicted class, the one accuracy counts: a confident error
    is the likeliest mislabelled clip or systematic confusion, an unsure correct video the next to fail.
    Rows of NaN (videos that could not be read) are in neither. Ties keep the dataset's order.
    """
    scored = ~probabilities.isnan().any(dim=1)
    confidence, predicted = probabilities.nan_to_num(-1.0).max(dim=1)
    index = torch.arange(len(labels))
    wrong = index[scored & (predicted != labels)]
    right = index[scored & (predicted == labels)]
    errors = wrong[torch.argsort(-confidence[wrong], stable=True)]
    unsure = right[torch.argsort(confidence[right], stable=True)]
    return Pick(errors[:limit].tolist(), len(errors)), Pick(unsure[:limit].tolist(), len(unsure))


def pick_mistakes(probabilities: torch.Tensor, targets: torch.Tensor, thresholds: list[float], *,
                  limit: int) -> tuple[Pick, Pick]:
    """A multi-label model's (false positives, false negatives): the videos given a label they do not
    have, the highest such score first, and the videos denied a label they have, the lowest such
    score first: the most confident mistakes of each kind, `limit` of each. NaN rows are in neither."""
    scored = ~probabilities.isnan().any(dim=1)
    probs = probabilities.nan_to_num(0.5)
    above = probs >= torch.tensor(thresholds, dtype=probs.dtype)
    truth = targets.bool()
    worst_false = torch.where(above & ~truth, probs, torch.full_like(probs, -1.0)).max(dim=1).values  # -1: none
    worst_missed = torch.where(~above & truth, probs, torch.full_like(probs, 2.0)).min(dim=1).values  # 2: none
    index = torch.arange(len(probs))
    false_pos = index[scored & (worst_false >= 0)]
    false_neg = index[scored & (worst_missed <= 1)]
    false_pos = false_pos[torch.argsort(-worst_false[false_pos], stable=True)]
    false_neg = false_neg[torch.argsort(worst_missed[false_neg], stable=True)]
    return Pick(false_pos[:limit].tolist(), len(false_pos)), Pick(false_neg[:limit].tolist(), len(false_neg))


def clips_seen(clf: Classifier, samples: list[Sample], indices: list[int], *, views: tuple[int, int],
               decoder: Decoder | None = None, batch_size: int = 16,
               workers: int = 0) -> Iterator[tuple[int, np.ndarray | str]]:
    """(index, uint8 (V, L, H, W, 3)) for each video of `indices`: its views through evaluation's own
    loader, so exactly the clips the model was fed; (index, reason) for one that cannot be read now."""
    from vidclf.evaluate import evaluation_loader

    loader = evaluation_loader(clf, samples, device=torch.device("cpu"), batch_size=batch_size, workers=workers,
                               decoder=decoder, views=views, sampler=indices)
    for batch in loader:
        for failure in batch.failures:
            yield failure.index, failure.reason
        for row in range(0, len(batch.lengths), batch.views):  # a video's views are consecutive rows
            clip = batch.clips[row : row + batch.views, : int(batch.lengths[row])]  # (V, L, H, W, 3), padding cut
            yield int(batch.indices[row]), clip.numpy()


def nearest_training(clf: Classifier, queries: list[str], training: list[Sample], *, k: int = 3,
                     device: torch.device, dtype: torch.dtype | None = None, views: tuple[int, int],
                     decoder: Decoder | None = None, batch_size: int = 16, workers: int | None = None,
                     progress: Callable[[int], None] | None = None) -> dict[str, list[Neighbour]]:
    """Each query's `k` most similar training videos (never itself), by the cosine of the vectors
    `vidclf embed` gives (forward_features, the same views as the evaluation).

    Under torchrun each rank embeds its share and every rank gets the whole answer.
    """
    from vidclf.predict import embed_files

    rank = distributed.current()
    paths = list(dict.fromkeys(queries + [s.path for s in training]))  # each video embedded once
    vectors: dict[str, list[float]] = {}
    records = embed_files(paths[rank.rank :: rank.world], clf, device=device, dtype=dtype, batch_size=batch_size,
                          workers=workers, decoder=decoder, views=views)
    mine = []
    for record in records:
        mine.append(record)
        if progress is not None:
            progress(1)
    for part in distributed.gather(mine):
        vectors.update((r["path"], r["embedding"]) for r in part if r["error"] is None)
    return _rank_by_cosine(vectors, queries, [s for s in training if s.path in vectors], k)


def _rank_by_cosine(vectors: dict[str, list[float]], queries: list[str], training: list[Sample],
                    k: int) -> dict[str, list[Neighbour]]:
    asked = [q for q in queries if q in vectors]
    if not asked or not training:
        return {q: [] for q in queries}

    def unit(paths: list[str]) -> torch.Tensor:  # (N, D), rows of length 1: their products are cosines
        return torch.nn.functional.normalize(torch.tensor([vectors[p] for p in paths]), dim=1)

    similarity = unit(asked) @ unit([s.path for s in training]).T  # (queries, training)
    column = {s.path: j for j, s in enumerate(training)}
    for row, query in enumerate(asked):
        if query in column:  # evaluating the training split: a video is not its own neighbour
            similarity[row, column[query]] = float("-inf")
    top = similarity.topk(min(k, len(training)), dim=1)
    found = {q: [Neighbour(training[j].path, training[j].label, v)
                 for v, j in zip(values.tolist(), columns.tolist()) if v > float("-inf")]
             for q, values, columns in zip(asked, top.values, top.indices)}
    return {q: found.get(q, []) for q in queries}
