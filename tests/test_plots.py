"""Plots: valid PNGs of sane sizes, rows normalised per true class, bad input refused, matplotlib loaded lazily."""

from __future__ import annotations

import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from vidclf.errors import WriteError
from vidclf.plots import normalise_rows, save_confusion, save_curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(path) -> np.ndarray:
    """The image as BGR pixels, after checking that the file really is a PNG."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = cv2.imread(str(path))
    assert image is not None
    return image


def orange_pixels(image: np.ndarray) -> int:
    """Pixels of matplotlib's second colour (#ff7f0e), which the validation line is drawn in."""
    b, g, r = (image[..., i].astype(int) for i in range(3))
    return int(((r > 230) & (abs(g - 127) < 25) & (b < 60)).sum())


def first_colour_pixels(image: np.ndarray) -> int:
    """Pixels of matplotlib's first colour (#1f77b4), which the training line is drawn in."""
    b, g, r = (image[..., i].astype(int) for i in range(3))
    return int(((abs(r - 31) < 30) & (abs(g - 119) < 30) & (abs(b - 180) < 30)).sum())


def dark_blue_pixels(image: np.ndarray) -> int:
    """Pixels near the top of the Blues colour map, i.e. cells holding most of their true class."""
    b, g, r = (image[..., i].astype(int) for i in range(3))
    return int(((b > 90) & (r < 40) & (g < 90)).sum())


def history(epochs: int, *, val: bool = True) -> list[dict]:
    return [{"epoch": e, "train_loss": 2 / e, "train_acc": 1 - 1 / (e + 1), "val_loss": 2.5 / e if val else None,
             "val_acc": 0.9 - 1 / (e + 1) if val else None, "lr": 0.01, "seconds": 1.0, "clips_per_s": 10.0,
             "data_wait": 0.1, "train_clips": 20} for e in range(1, epochs + 1)]


def confusion(n: int) -> list[list[int]]:
    rng = np.random.default_rng(0)
    return (rng.integers(0, 4, (n, n)) + 20 * np.eye(n, dtype=int)).tolist()


def test_normalise_rows_sums_each_true_class_to_one_and_keeps_empty_rows_zero():
    got = normalise_rows([[3, 1, 0], [0, 0, 0], [2, 2, 4]])
    np.testing.assert_allclose(got, [[0.75, 0.25, 0], [0, 0, 0], [0.25, 0.25, 0.5]])


def test_curves_are_a_wide_png_rewritten_in_place(tmp_path):
    run = tmp_path / "run"  # tmp_path itself also holds the test's cache folder
    run.mkdir()
    path = run / "curves.png"
    assert save_curves(history(3), path) == path
    save_curves(history(5), str(path))  # train rewrites it after every epoch
    image = read_png(path)
    h, w = image.shape[:2]
    assert 200 < h < w < 3000
    assert orange_pixels(image) > 100  # the validation lines are drawn
    assert [p.name for p in run.iterdir()] == ["curves.png"]  # no temporary file left behind


@pytest.mark.parametrize("rows", [history(4, val=False), history(1), history(1, val=False)],
                         ids=["no-validation", "one-epoch", "one-epoch-no-validation"])
def test_curves_without_validation_or_with_one_epoch(tmp_path, rows):
    image = read_png(save_curves(rows, tmp_path / "curves.png"))
    assert (orange_pixels(image) > 10) == (rows[0]["val_loss"] is not None)
    h = image.shape[0]
    assert first_colour_pixels(image[int(h * 0.35) : int(h * 0.65)]) > 20  # training points, away from the legend


def test_curves_skip_validation_epochs_that_have_none(tmp_path):
    rows = history(4)
    rows[0]["val_loss"] = rows[0]["val_acc"] = None
    read_png(save_curves(rows, tmp_path / "curves.png"))


def test_confusion_grows_with_the_classes_up_to_a_cap(tmp_path):
    small = read_png(save_confusion(confusion(6), [f"class {i}" for i in range(6)], tmp_path / "6.png"))
    start = time.perf_counter()
    big = read_png(save_confusion(confusion(100), [f"class_{i:03d}" for i in range(100)], tmp_path / "100.png"))
    assert time.perf_counter() - start < 10
    assert 300 < small.shape[0] < big.shape[0] <= 2100
    assert small.shape[1] < big.shape[1] <= 2200


def test_confusion_colours_rows_normalised_per_true_class(tmp_path):
    # Unnormalised, both would be saturated; normalised, only the diagonal one reaches the top of the scale.
    classes = ["a", "b", "c"]
    diagonal = read_png(save_confusion([[10, 0, 0], [0, 10, 0], [0, 0, 10]], classes, tmp_path / "d.png"))
    spread = read_png(save_confusion([[5, 5, 0], [0, 5, 5], [5, 0, 5]], classes, tmp_path / "s.png"))
    assert dark_blue_pixels(diagonal) > dark_blue_pixels(spread) + 10_000


@pytest.mark.parametrize("matrix, classes", [
    ([[1, 2], [3, 4]], ["a", "b", "c"]),
    ([[1, 2, 3], [4, 5, 6]], ["a", "b"]),
    ([[1, 2], [3]], ["a", "b"]),
    ([], []),
], ids=["fewer-rows-than-classes", "not-square", "ragged", "empty"])
def test_confusion_that_does_not_fit_the_classes_is_refused(tmp_path, matrix, classes):
    with pytest.raises(ValueError, match="square matrix"):
        save_confusion(matrix, classes, tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()


def test_unwritable_path_names_the_path(tmp_path):
    path = tmp_path / "missing" / "c.png"
    with pytest.raises(WriteError, match="missing/c.png: cannot write: No such file or directory$"):
        save_confusion([[1]], ["a"], path)


def test_importing_plots_does_not_import_matplotlib():
    code = "import sys, vidclf.plots; assert 'matplotlib' not in sys.modules, 'matplotlib imported eagerly'"
    subprocess.run([sys.executable, "-c", code], check=True)
