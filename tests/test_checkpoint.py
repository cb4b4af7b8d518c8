import pytest
import torch

from vidclf import checkpoint
from vidclf.errors import CheckpointError


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


def _minimal() -> dict:
    return {"model": {"name": "cnn-lstm"}, "classes": ["a"], "preprocess": {}, "state_dict": {}}


def test_save_is_atomic_and_loads_back(tmp_path):
    path = tmp_path / "run" / "best.pt"
    checkpoint.save(_minimal(), path)
    assert [p.name for p in path.parent.iterdir()] == ["best.pt"]  # no temporary left behind
    loaded = checkpoint.load(path)
    assert loaded["classes"] == ["a"] and loaded["format_version"] == checkpoint.FORMAT_VERSION


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pt"
    torch.save({**_minimal(), "format_version": 1, "payload": _Evil()}, evil)
    with pytest.raises(CheckpointError, match="evil.pt: refused to load"):
        checkpoint.load(evil)
    assert not (tmp_path / "pwned").exists()


def test_not_a_checkpoint_and_wrong_version(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.pt: not a checkpoint"):
        checkpoint.load(text)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, other)
    with pytest.raises(CheckpointError, match="other.pt: not a vidclf checkpoint"):
        checkpoint.load(other)
    future = tmp_path / "future.pt"
    torch.save({**_minimal(), "format_version": 99}, future)
    with pytest.raises(CheckpointError, match="format 99 is not supported"):
        checkpoint.load(future)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        checkpoint.load(tmp_path / "missing.pt")


def test_newest_best(tmp_path):
    import os

    for i, name in enumerate(["a", "b", "c"]):
        p = tmp_path / name / "best.pt"
        p.parent.mkdir()
        p.write_bytes(b"")
        os.utime(p, (i, [5, 9, 1][i]))
    assert checkpoint.newest_best(tmp_path) == tmp_path / "b" / "best.pt"
    with pytest.raises(CheckpointError, match="no best.pt"):
        checkpoint.newest_best(tmp_path / "a" / "empty")
