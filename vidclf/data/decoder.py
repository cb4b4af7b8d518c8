"""Decoding that cannot hang: `video.py`'s functions run in a child process that is killed when a
video makes no progress for `timeout` seconds.

A read from a network mount that stops answering blocks inside the kernel, where no thread, signal
handler or FFmpeg interrupt callback can reach it, and (once the server holds the request) not even
SIGKILL ends it before the mount answers or goes away. Only abandoning the process that reads gets
the caller going again. So each decoding process (a DataLoader worker, a `check` thread, predict
itself) keeps one child that decodes for it. The child reports a heartbeat as
frames decode; if none comes for `timeout` seconds the child is killed, the video is a `VideoError`
("no progress for N s"), and the next call starts a fresh child. The child also dies with its parent.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import weakref
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Callable, Iterator

DEFAULT_TIMEOUT = 60.0  # seconds without a decoded frame: far beyond any real frame, short of a hung run
HEARTBEAT = 0.25  # the child reports progress at most this often (seconds)
START_TIMEOUT = 60.0  # the child's imports (numpy, OpenCV) on a loaded machine


class Decoder:
    """Calls decoding functions (`video.load_clip`, `views.load_views` …): in a watched child process, or
    here if `timeout` is None. Functions travel by reference (module and name), as pickle sends them.

    Safe to copy into forked or spawned workers: a copy starts its own child on first use.
    """

    def __init__(self, timeout: float | None = DEFAULT_TIMEOUT):
        if timeout is not None and timeout <= 0:
            raise ValueError(f"--decode-timeout should be positive (seconds), got {timeout}")
        self.timeout = timeout
        self._child: _Child | None = None

    def __getstate__(self) -> dict:
        return {"timeout": self.timeout, "_child": None}  # a child belongs to the process that started it

    def call(self, fn: Callable, path: str | Path, *args, **kwargs) -> Any:
        """`fn(path, …)`; a video that stalls raises VideoError(path, "no progress for N s")."""
        (result,) = self._run("call", fn, path, args, kwargs)  # to the end: the child is ready again
        return result

    def iterate(self, fn: Callable, path: str | Path, *args, **kwargs) -> Iterator[Any]:
        """The items of the generator `fn(path, …)`; each item counts as progress."""
        yield from self._run("iterate", fn, path, args, kwargs)

    def _run(self, kind: str, fn: Callable, path, args: tuple, kwargs: dict) -> Iterator[Any]:
        if self.timeout is None:
            result = fn(path, *args, **kwargs)
            yield from (result if kind == "iterate" else [result])
            return
        if self._child is None or not self._child.usable():
            self._child = _Child()
        yield from self._child.run(kind, fn, path, args, kwargs, self.timeout)

    def close(self) -> None:
        if self._child is not None:
            self._child.kill()
            self._child = None


def read_ahead(items: Iterator[Any], depth: int) -> Iterator[Any]:
    """The items of `items`, fetched by a thread up to `depth` ahead of the caller.

    `Decoder.iterate`'s child blocks while its pipe is full, so a caller that runs a model between
    items would otherwise leave the child idle: with a thread reading ahead, decoding the next
    windows overlaps the model's work on these. Errors reach the caller at the item they stopped;
    a caller that stops early stops the thread (and the generator's cleanup kills the child).
    """
    import queue
    import threading

    box: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def put(entry: tuple) -> bool:
        while not stop.is_set():
            try:
                box.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    break
            else:
                put(("end", None))
        except BaseException as err:  # noqa: BLE001  (raised again in the caller's thread)
            put(("error", err))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, daemon=True, name="vidclf-read-ahead")
    thread.start()
    try:
        while True:
            kind, value = box.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join(timeout=1.0)  # a thread inside a stalled read ends at the watchdog's timeout, on its own


class _Child:
    """One decoding process and the two pipes to it (requests in, messages out)."""

    def __init__(self):
        from vidclf.data.video import VideoError

        self.owner = os.getpid()
        self.killed = False
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        package_parent = str(Path(__file__).resolve().parents[2])  # the same vidclf, installed or not
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))}
        with stop_signals_blocked():
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vidclf.data.decoder", str(to_child_r), str(from_child_w)],
                pass_fds=(to_child_r, from_child_w), env=env,
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

    def run(self, kind: str, fn: Callable, path, args: tuple, kwargs: dict, timeout: float) -> Iterator[Any]:
        self.requests.send((kind, fn, str(path), args, kwargs))
        finished = False
        try:
            yield from self._replies(path, timeout)
            finished = True
        finally:
            if not finished:  # abandoned mid-way (an error, or the caller stopped early): out of step
                self.kill()

    def _replies(self, path, timeout: float) -> Iterator[Any]:
        from vidclf.data.video import VideoError

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
            if tag == "item":
                yield value
            elif tag == "done":
                return
            elif tag == "error":
                raise value
            # "tick": progress; wait again

    def kill(self) -> None:
        self.killed = True
        self._finalizer()
        for conn in (self.requests, self.messages):
            conn.close()


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL, without waiting long: a read the kernel already handed to a stalled FUSE or NFS server
    sleeps uninterruptibly, and the child dies only when that mount answers or goes away."""
    if proc.poll() is None:
        proc.kill()
        try:
            proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass  # reaped later by subprocess, once the kernel lets it die


def _serve(requests: Connection, messages: Connection) -> None:
    """The child's loop: run each request, sending items, heartbeats while frames decode, and the end."""
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
            kind, fn, path, args, kwargs = requests.recv()
        except EOFError:
            return  # the parent is gone
        try:
            result = fn(path, *args, **kwargs)
            for item in result if kind == "iterate" else [result]:
                messages.send(("item", item))
            messages.send(("done", None))
        except Exception as err:  # noqa: BLE001  (sent to the parent, which raises it)
            try:
                messages.send(("error", err))
            except Exception:  # noqa: BLE001  (an exception that does not pickle)
                messages.send(("error", RuntimeError(f"{type(err).__name__}: {err}")))


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when its parent dies, even mid-read on a stalled mount."""
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
    _serve(Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False))
