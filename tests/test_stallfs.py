"""tests/stallfs.py behaves as the hang tests rely on: it passes files through, stalls exactly where
told, and its context manager leaves neither a hung reader nor a mount nor a process behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.stallfs import fuse_unavailable, mounted

SIZE = 200_000
STOP = SIZE // 2  # the stall point of a `stall` file under stall_after=0.5


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A tree with a normal file, a nested one and a stall file, all of SIZE random bytes."""
    if reason := fuse_unavailable():
        pytest.skip(reason)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for name in ("plain.bin", "sub/nested.bin", "x_stall.bin"):
        (src / name).write_bytes(os.urandom(SIZE))
    (tmp_path / "mnt").mkdir()
    return src


def read_in_child(path: Path, n: int = -1) -> subprocess.Popen[bytes]:
    """Read in another process: a read stalled in FUSE blocks even SIGKILL, so never in pytest's."""
    code = f"import sys; sys.stdout.buffer.write(open({str(path)!r}, 'rb').read({n}))"
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def own_stallfs_processes() -> list[int]:
    """Our children running tests.stallfs (other test sessions may run their own)."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == os.getpid() and b"tests.stallfs" in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except (OSError, IndexError, ValueError):
            continue
    return pids


def test_normal_files_read_back_identical(source: Path) -> None:
    with mounted(source, source.parent / "mnt") as mnt:
        assert sorted(os.listdir(mnt)) == ["plain.bin", "sub", "x_stall.bin"]
        for name in ("plain.bin", "sub/nested.bin"):
            assert (mnt / name).read_bytes() == (source / name).read_bytes()
        assert (mnt / "x_stall.bin").stat().st_size == SIZE


def test_stall_file_blocks_exactly_past_its_fraction_until_unmounted(source: Path) -> None:
    expected = (source / "x_stall.bin").read_bytes()
    with mounted(source, source.parent / "mnt", stall_after=0.5) as mnt:
        head = read_in_child(mnt / "x_stall.bin", STOP)
        out, _ = head.communicate(timeout=5)
        assert out == expected[:STOP]

        blocked = read_in_child(mnt / "x_stall.bin", STOP + 1)
        with pytest.raises(subprocess.TimeoutExpired):
            blocked.wait(timeout=1.5)
        # Multi-threaded: the stalled read does not hold up other files.
        other = read_in_child(mnt / "plain.bin")
        assert other.communicate(timeout=5)[0] == (source / "plain.bin").read_bytes()
    _, err = blocked.communicate(timeout=5)
    assert blocked.returncode == 1 and b"[Errno" in err  # its read failed (ECONNABORTED)
    assert not os.path.ismount(mnt)
    assert own_stallfs_processes() == []
