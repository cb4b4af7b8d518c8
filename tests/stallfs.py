"""A FUSE filesystem whose reads stall, so tests can prove that vidclf never hangs on a dead mount.

A network mount (sshfs, NFS, SMB) that stops answering mid-file makes `read(2)` block with no error
and no timeout. `python -m tests.stallfs SOURCE MOUNTPOINT [--stall-after F]` serves SOURCE
read-only; every file whose name contains "stall" serves its first F of bytes, and any read past
that point blocks until the filesystem process dies. A reader blocked in FUSE ignores every signal,
SIGKILL included, and its process cannot even exit; so tests read in child processes and use `mounted()`,
which kills the filesystem at the end, and `fuse_unavailable()` to skip where FUSE cannot work.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


class StallFS:
    """mfusepy operations: a read-only passthrough of `root` whose "stall" files stop answering."""

    use_ns = True  # times in nanoseconds, as os.stat gives them

    def __init__(self, root: str, stall_after: float) -> None:
        self.root, self.stall_after = root, stall_after

    def _real(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    @staticmethod
    def _stalls(path: str) -> bool:
        return "stall" in os.path.basename(path)

    def getattr(self, path: str, fh: Any = None) -> dict[str, int]:
        st = os.lstat(self._real(path))
        attrs = {k: getattr(st, k) for k in ("st_mode", "st_nlink", "st_size", "st_uid", "st_gid")}
        return attrs | {k: getattr(st, k + "_ns") for k in ("st_atime", "st_mtime", "st_ctime")}

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *os.listdir(self._real(path))]

    def open(self, path: str, fi: Any) -> int:
        fi.fh = os.open(self._real(path), os.O_RDONLY)
        # Stall files bypass the page cache: else kernel readahead would ask for bytes past the
        # stall point on behalf of a read before it, and that earlier read would block too.
        fi.direct_io = self._stalls(path)
        return 0

    def read(self, path: str, size: int, offset: int, fi: Any) -> bytes:
        if self._stalls(path):
            stop = int(os.fstat(fi.fh).st_size * self.stall_after)
            if offset >= stop:
                threading.Event().wait()  # the server stopped answering; only our death ends this
            size = min(size, stop - offset)  # a short read up to the stall point, as a network gives
        return os.pread(fi.fh, size, offset)

    def release(self, path: str, fi: Any) -> int:
        os.close(fi.fh)
        return 0


@functools.cache
def fuse_unavailable() -> str | None:
    """Why a stallfs mount cannot work here, or None if it can: tests skip with this reason."""
    try:
        import mfusepy  # noqa: F401  (raises OSError when libfuse is missing)
    except (ImportError, OSError) as e:
        return f"mfusepy unusable: {e}"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is missing or not accessible"
    with tempfile.TemporaryDirectory() as tmp:  # e.g. a container without CAP_SYS_ADMIN cannot mount
        (mnt := Path(tmp, "mnt")).mkdir()
        try:
            with mounted(Path(tmp), mnt):
                return None
        except RuntimeError as e:
            return str(e).splitlines()[0]


@contextlib.contextmanager
def mounted(source: Path, mountpoint: Path, *, stall_after: float = 0.5) -> Iterator[Path]:
    """Serve `source` at `mountpoint` from a child process; on exit unmount it and kill the child,
    which fails every read still blocked on the mount (ECONNABORTED) instead of leaving it hung."""
    fusermount = shutil.which("fusermount3") or shutil.which("fusermount")
    if not fusermount:
        raise RuntimeError("stallfs needs fusermount3 or fusermount (Debian: apt-get install fuse3)")
    cmd = [sys.executable, "-m", "tests.stallfs", str(source), str(mountpoint), f"--stall-after={stall_after}"]
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: a full pipe would block the filesystem
        proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        try:
            deadline = time.monotonic() + 10
            while not os.path.ismount(mountpoint):
                if proc.poll() is not None or time.monotonic() > deadline:
                    err.seek(0)
                    raise RuntimeError(f"stallfs did not mount {mountpoint}: {err.read().decode(errors='replace')}")
                time.sleep(0.05)
            yield mountpoint
        finally:
            subprocess.run([fusermount, "-u", "-z", str(mountpoint)], capture_output=True)
            try:  # unmounted, it exits by itself unless a read is stalled (SIGTERM would not help then)
                proc.wait(0.5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main() -> None:
    import mfusepy

    parser = argparse.ArgumentParser(prog="python -m tests.stallfs", description=__doc__.splitlines()[0])
    parser.add_argument("source", help="directory to serve read-only")
    parser.add_argument("mountpoint")
    parser.add_argument("--stall-after", type=float, default=0.5, help="fraction of a stall file that is served")
    args = parser.parse_args()
    # libfuse is multi-threaded by default, so a stalled read blocks only its own worker thread; but
    # libfuse >= 3.12 runs at most 10 of them, and ten stalled reads would stall the whole mount.
    version = (mfusepy.fuse_version_major, mfusepy.fuse_version_minor)
    threads = {"max_threads": 1000} if version >= (3, 12) else {}
    mfusepy.FUSE(StallFS(os.path.abspath(args.source), args.stall_after), args.mountpoint,
                 raw_fi=True, foreground=True, ro=True, fsname="stallfs", **threads)


if __name__ == "__main__":
    main()
