"""Shared fixtures: a small synth dataset and one trained checkpoint, made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# Small enough to train in seconds on 2 cores, big enough to have a validation split per class.
SMALL = dict(classes=3, clips_per_class=6, frames=8, size=32, seed=0)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Tests never write to the user's cache folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of tiny models: a second thread only waits, and on a busy 2-core machine 25× slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    from vidclf.synth import write_dataset

    root = tmp_path_factory.mktemp("synth") / "data"
    write_dataset(root, **SMALL)
    return root


@pytest.fixture(scope="session")
def trained(tmp_path_factory, synth_data) -> Path:
    """best.pt of a one-epoch cnn-lstm run on `synth_data`."""
    from vidclf.output import stderr
    from vidclf.train import TrainConfig, fit

    out = tmp_path_factory.mktemp("models")
    cfg = TrainConfig(data=str(synth_data), num_frames=8, size=32, batch_size=4, epochs=1, workers=0,
                      cache=None, out=str(out), device="cpu")
    result = fit(cfg, console=stderr, show_progress=False)
    return result.best
