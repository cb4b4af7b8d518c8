"""Decoding that cannot hang: `video.py`'s functions run in a child process that is killed when a
video makes no progress for `timeout` seconds.

A read from a network mount that stops answering blocks inside the kernel, where no thread, signal
handler or FFmpeg interrupt callback can reach it, and (once the server holds the request) not even
SIGKILL ends it before the mount answers or goes away. Only abandoning the process that reads gets
the caller going again. So each decoding process (a DataLoader worker, a `check` thread, predict
itself) keeps one child that decodes for it. The child reports a heartbeat as
frames decode; if none comes for `timeout` seconds the child is killed, the video is a `VideoError`
("no progress for N s"), and the next call starts a fresh child. The child also dies with its parent.
A call may name where its frames go (`into`, a part of a `SharedArena` the child maps): then the child
writes them there and only the rest of the result travels through the pipe. Calls may be sent ahead
(`prefetch`), so that the child goes from one file to the next without waiting for this process.
"""

from __future__ import annotations

import collections
import contextlib
import os
import subprocess
import sys
import time
import weakref
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

if TYPE_CHECKING:
    import numpy as np

    from vidclf.data.shared import SharedArena

DEFAULT_TIMEOUT = 60.0  # seconds without a decoded frame: far beyond any real frame, short of a hung run
HEARTBEAT = 0.25  # the child reports progress at most this often (seconds)
START_TIMEOUT = 60.0  # the child's imports (numpy, OpenCV) on a loaded machine
PIPE_BYTES = 1 << 20  # Linux's default limit for a pipe (/proc/sys/fs/pipe-max-size)


class Decoder:
    """Calls decoding functions (`video.load_clip`, `views.load_views` …): in a watched child process, or
    here if `timeout` is None. Functions travel by reference (module and name), as pickle sends them.

    Safe to copy into forked or spawned workers: a copy starts its own child on first use (without
    `shared`, which belongs to the process that made it).
    """

    def __init__(self, timeout: float | None = DEFAULT_TIMEOUT, *, shared: SharedArena | None = None):
        if timeout is not None and timeout <= 0:
            raise ValueError(f"--decode-timeout should be positive (seconds), got {timeout}")
        self.timeout = timeout
        self.shared = shared  # memory the child maps, for calls `into` a part of it
        self._child: _Child | None = None
        self._ahead: collections.deque = collections.deque()  # requests `prefetch` sent, in order

    def __getstate__(self) -> dict:
        # A child (and what it was sent) belongs to the process that started it.
        return {"timeout": self.timeout, "shared": None, "_child": None, "_ahead": collections.deque()}

    def call(self, fn: Callable, path: str | Path, *args, into: np.ndarray | None = None, **kwargs) -> Any:
        """`fn(path, …)`; a video that stalls raises VideoError(path, "no progress for N s").

        With `into`, the frames in `fn`'s result (its first array, of `into`'s shape) are written into
        `into`, which the result then holds in their place. From a child they come through the shared
        arena, of which `into` must be a part, instead of as a pickle.
        """
        if self.timeout is None:
            failed, value = _outcome(fn, path, args, kwargs, into)
        else:
            request = ("call", fn, str(path), args, kwargs, self._place(into))
            if self._ahead and self._ahead[0] == request and self._child.usable():
                self._ahead.popleft()  # sent by `prefetch`: its answer comes next
            else:
                self._send(request, fresh=bool(self._ahead))  # out of the prefetched order: a fresh child
            try:
                failed, value = self._child.answer(str(path), self.timeout)
            except BaseException:
                self._ahead.clear()  # the child is gone, and what was sent ahead with it
                raise
        if failed:
            raise value
        return _restore(value, into)

    def prefetch(self, fn: Callable, path: str | Path, *args, into: np.ndarray | None = None, **kwargs) -> None:
        """Send `call(fn, path, …)` ahead, for the `call` with the same arguments that is to follow (after
        the calls prefetched before it): the child then goes from one file to the next without waiting
        for this process, which cost a round trip a file (0.2–0.4 ms beside 1.5 ms of decoding on the
        2-core machine). A call that does not follow the prefetched order starts a fresh child."""
        if self.timeout is not None:
            request = ("call", fn, str(path), args, kwargs, self._place(into))
            self._send(request, fresh=False)
            self._ahead.append(request)

    def iterate(self, fn: Callable, path: str | Path, *args, **kwargs) -> Iterator[Any]:
        """The items of the generator `fn(path, …)`; each item counts as progress."""
        if self.timeout is None:
            yield from fn(path, *args, **kwargs)
            return
        self._send(("iterate", fn, str(path), args, kwargs, None), fresh=bool(self._ahead))
        for failed, value in self._child.items(str(path), self.timeout):
            if failed:
                raise value
            yield value

    def _send(self, request: tuple, *, fresh: bool) -> None:
        """To the child (a fresh one if there is none, it died, or `fresh`: it is out of step)."""
        if fresh or self._child is None or not self._child.usable():
            self.close()
            self._child = _Child(self.shared)
        self._child.requests.send(request)

    def _place(self, into: np.ndarray | None) -> tuple | None:
        """Where the child writes frames meant for `into`."""
        if into is None:
            return None
        if self.shared is None:
            raise ValueError("a call into shared memory needs a Decoder made with `shared`")
        return (*self.shared.place(into), into.shape, into.dtype.str)

    def close(self) -> None:
        if self._child is not None:
            self._child.kill()
            self._child = None
        self._ahead.clear()


def _outcome(fn: Callable, path, args: tuple, kwargs: dict, into: np.ndarray | None) -> tuple[bool, Any]:
    """(failed, value) of one call: its result (with `into`, `_store`'s), or the exception it raised."""
    try:
        result = fn(path, *args, **kwargs)
        return False, result if into is None else _store(result, into)
    except Exception as err:  # noqa: BLE001  (the caller gets it in this call's place)
        return True, err


def _restore(value: Any, into: np.ndarray | None) -> Any:
    """A call's result as the caller sees it: with `into` in the place its frames were taken from."""
    if into is None:
        return value
    index, rest = value
    return _replace(rest, index, into)


def _store(result: tuple, into: np.ndarray) -> tuple[int, tuple]:
    """Write the frames in `result` (its first array) into `into`: (their position, `result` without them)."""
    import numpy as np

    index = next((i for i, part in enumerate(result) if isinstance(part, np.ndarray)), None)
    if index is None:
        raise TypeError(f"a call into shared memory needs a result with frames, got {type(result).__name__}")
    frames = result[index]
    if frames.shape != into.shape or frames.dtype != into.dtype:
        raise ValueError(f"frames {frames.shape} {frames.dtype} do not fit the place for {into.shape} {into.dtype}")
    into[...] = frames
    return index, _replace(result, index, None)


def _replace(result: tuple, index: int, value: Any) -> tuple:
    """`result` (a tuple or a NamedTuple) with `value` at `index`."""
    parts = list(result)
    parts[index] = value
    return result._make(parts) if hasattr(result, "_make") else tuple(parts)


class _Child:
    """One decoding process and the two pipes to it (requests in, messages out), and the shared arena
    it maps, if any."""

    def __init__(self, shared: SharedArena | None = None):
        from vidclf.data.video import VideoError

        self.owner = os.getpid()
        self.killed = False
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        _widen(from_child_w)
        package_parent = str(Path(__file__).resolve().parents[2])  # the same vidclf, installed or not
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")])),
               "OPENBLAS_NUM_THREADS": "1"}  # no linear algebra here: numpy's import then starts no BLAS threads (0.23 → 0.13 s of CPU)
        arena = [str(shared.fd), str(shared.nbytes)] if shared is not None else []
        with stop_signals_blocked():
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vidclf.data.decoder", str(to_child_r), str(from_child_w), *arena],
                pass_fds=(to_child_r, from_child_w, *([shared.fd] if shared is not None else [])), env=env,
                # Not the caller's streams: a child abandoned mid-read could hold a pipe open for hours,
                # and `vidclf … | consumer` would wait for an end of file that never comes.
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        os.close(to_child_r)
        os.close(from_child_w)
        self.requests, self.messages = Connection(to_child_w, readable=False), Connection(from_child_r, writable=False)
        self._finalizer = weakref.finalize(self, _kill, self.proc)
        if not self.messages.poll(START_TIMEOUT):
            self.kill()
            raise VideoError("(decoder)", f"the decoding process did not start within {START_TIMEOUT:g} s")
        self.messages.recv()  # "ready"

    def usable(self) -> bool:
        """Started by this process and neither killed nor dead (a killed child may linger in the kernel)."""
        return not self.killed and self.owner == os.getpid() and self.proc.poll() is None

    def answer(self, path: str, timeout: float) -> tuple[bool, Any]:
        """The (failed, value) of the next request sent, a call, read to its end."""
        (answer,) = self.items(path, timeout)
        return answer

    def items(self, path: str, timeout: float) -> Iterator[tuple[bool, Any]]:
        """(failed, value) for each item the next request sent gives (a failure ends it); a caller that
        stops before the end leaves the child out of step, and it is killed."""
        from vidclf.data.video import VideoError

        ended = False
        try:
            while True:
                if not self.messages.poll(timeout):
                    self.kill()
                    raise VideoError(path, f"no progress for {timeout:g} s (decoding abandoned)")
                try:
                    tag, value = self.messages.recv()
                except (EOFError, OSError):
                    code = self.proc.wait()
                    self.kill()
                    raise VideoError(path, f"the decoder crashed on this file (exit status {code})") from None
                if tag == "done":
                    ended = True
                    return
                if tag in ("answer", "answer failed"):  # a call's one item, and its end
                    ended = True
                    yield tag == "answer failed", value
                    return
                if tag in ("item", "failed"):
                    yield tag == "failed", value
                # "tick": progress; wait again
        finally:
            if not ended:
                self.kill()

    def kill(self) -> None:
        self.killed = True
        self._finalizer()
        for conn in (self.requests, self.messages):
            conn.close()


def _widen(fd: int) -> None:
    """Linux: room in the pipe for a clip's frames in one write. Through the default 64 kB a
    16-frame clip at 64² (197 kB) took four wake-ups of each side, and a pickled call cost
    3.4 ms against 2.2 ms with 1 MB (1.6 ms decoding in-process) on the 2-core machine."""
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (ImportError, AttributeError, OSError):
        pass  # another system, or over the user's pipe quota: the default size works, slower


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL, without waiting long: a read the kernel already handed to a stalled FUSE or NFS server
    sleeps uninterruptibly, and the child dies only when that mount answers or goes away."""
    if proc.poll() is None:
        proc.kill()
        try:
            proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass  # reaped later by subprocess, once the kernel lets it die


def _serve(requests: Connection, messages: Connection, arena=None) -> None:
    """The child's loop: run each request, sending heartbeats while frames decode, and its answer (a call)
    or its items and end (an iteration), failures in their place. A call with a place in the shared
    `arena` has its frames written there; the rest is sent."""
    import numpy as np

    from vidclf.data import video

    last = time.monotonic()

    def heartbeat() -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= HEARTBEAT:
            messages.send(("tick", None))
            last = now

    video.on_frame = heartbeat
    messages.send(("ready", None))
    while True:
        try:
            kind, fn, path, args, kwargs, place = requests.recv()
        except EOFError:
            return  # the parent is gone
        if kind == "iterate":
            try:
                for item in fn(path, *args, **kwargs):
                    messages.send(("item", item))  # an item that does not pickle ends the iteration as a failure
            except Exception as err:  # noqa: BLE001  (sent to the parent, which raises it)
                _send_failure(messages, err, "failed")
            messages.send(("done", None))
        else:  # a call: one message, its answer and its end, so this process wakes once a file
            into = None
            if place is not None:
                offset, strides, shape, dtype = place
                into = np.ndarray(shape, dtype, buffer=arena, offset=offset, strides=strides)
            failed, value = _outcome(fn, path, args, kwargs, into)
            if failed:
                _send_failure(messages, value, "answer failed")
            else:
                try:
                    messages.send(("answer", value))
                except Exception as err:  # noqa: BLE001  (a result that does not pickle: nothing was sent yet)
                    _send_failure(messages, err, "answer failed")


def _send_failure(messages: Connection, err: Exception, tag: str) -> None:
    try:
        messages.send((tag, err))
    except Exception:  # noqa: BLE001  (an exception that does not pickle)
        messages.send((tag, RuntimeError(f"{type(err).__name__}: {err}")))


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when its parent dies, even mid-read on a stalled mount. "Parent"
    is the thread that started it: a child started by a thread that ends goes with it, so a thread that
    decodes through a child of its own must live as long as it needs it (lanes, DataLoader workers do)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def ignore_stop_signals() -> None:
    """For helper processes (DataLoader workers, decoding children): Ctrl-C and a scheduler's SIGTERM
    reach every process of the job, and only the main process may act on them. It finishes its step,
    saves, and shuts its helpers down; one that died first would fail the step it was serving."""
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


@contextlib.contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """Helper processes started inside are born with Ctrl-C and SIGTERM blocked (a signal mask survives
    fork and exec, a handler does not), so a signal to the whole job cannot kill one before it ignores
    them: a Python child's imports take seconds, and multiprocessing's forkserver never ignores SIGTERM
    at all (it died, and the DataLoader workers it forked followed it). Only the calling thread's mask
    changes: a signal meant for this process reaches another thread at once, or this one at the end."""
    import signal

    stops = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


if __name__ == "__main__":
    _die_with_parent()
    ignore_stop_signals()
    from vidclf.data.shared import map_arena

    _serve(Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False),
           map_arena(int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 3 else None)
