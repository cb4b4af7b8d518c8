"""The decoding child: a call into shared memory gives what a pickled call gives."""

import numpy as np
import pytest


def _clip_kwargs() -> dict:
    return dict(num_frames=8, size=32, sampling="center", stride=1, threads=1)


@pytest.mark.parametrize("timeout", [60.0, None], ids=["child", "in-process"])
def test_a_call_into_shared_memory_gives_what_a_pickled_call_gives(synth_data, timeout):
    from vidclf.data import video
    from vidclf.data.decoder import Decoder
    from vidclf.data.shared import SharedArena

    path = str(sorted(synth_data.rglob("*.mp4"))[0])
    expected, length = video.load_clip(path, **_clip_kwargs())
    arena = SharedArena(3 * expected.nbytes)
    into = arena.array(expected.shape, expected.nbytes)  # the middle of three places
    decoder = Decoder(timeout, shared=arena)
    try:
        frames, got_length = decoder.call(video.load_clip, path, into=into, **_clip_kwargs())
        assert frames is into and got_length == length
        assert np.array_equal(into, expected)
        assert not arena.array(expected.shape, 0).any() and not arena.array(expected.shape, 2 * expected.nbytes).any()
        with pytest.raises(ValueError, match="do not fit"):  # the child stays usable after a failed call
            decoder.call(video.load_clip, path, into=arena.array((4, 32, 32, 3), 0), **_clip_kwargs())
        assert decoder.call(video.probe, path).frames == 8
    finally:
        decoder.close()


def test_a_call_into_memory_the_child_cannot_see_is_refused(synth_data):
    from vidclf.data import video
    from vidclf.data.decoder import Decoder
    from vidclf.data.shared import SharedArena

    path = str(sorted(synth_data.rglob("*.mp4"))[0])
    elsewhere = np.zeros((8, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="needs a Decoder made with `shared`"):
        Decoder().call(video.load_clip, path, into=elsewhere, **_clip_kwargs())
    with pytest.raises(ValueError, match="not a part of this shared arena"):
        Decoder(shared=SharedArena(elsewhere.nbytes)).call(video.load_clip, path, into=elsewhere, **_clip_kwargs())


def stands_in(path: str, *, stall: str = "", crash: str = "") -> str:
    """In place of a decoding function (the child imports it from here): hangs without a heartbeat on a
    path containing `stall`, dies on one containing `crash`, else answers with the path."""
    import os
    import time

    if stall and stall in path:
        time.sleep(60)
    if crash and crash in path:
        os._exit(3)
    if path.endswith(".bad"):
        raise ValueError(f"{path}: unreadable")
    return path.upper()


def test_prefetched_calls_answer_in_order_failures_raised_in_their_place_the_child_kept():
    from vidclf.data.decoder import Decoder

    decoder = Decoder(timeout=1.0)
    try:
        paths = ["a", "b.bad", "c", "d.bad"]
        for path in paths:
            decoder.prefetch(stands_in, path)
        child = decoder._child.proc.pid
        assert decoder.call(stands_in, "a") == "A"
        with pytest.raises(ValueError, match="b.bad: unreadable"):
            decoder.call(stands_in, "b.bad")
        assert decoder.call(stands_in, "c") == "C"
        with pytest.raises(ValueError, match="d.bad: unreadable"):
            decoder.call(stands_in, "d.bad")
        assert decoder.call(stands_in, "e") == "E" and decoder._child.proc.pid == child  # in step all along
        decoder.prefetch(stands_in, "f")
        assert decoder.call(stands_in, "g") == "G" and decoder._child.proc.pid != child  # out of order: a fresh one
    finally:
        decoder.close()


@pytest.mark.parametrize("kind, reason", [("stall", "no progress for 1 s"), ("crash", "crashed on this file (exit status 3)")])
def test_a_prefetched_file_that_stalls_or_crashes_fails_alone_and_a_fresh_child_does_the_rest(kind, reason):
    from vidclf.data.decoder import Decoder
    from vidclf.data.video import VideoError

    decoder = Decoder(timeout=1.0)
    paths = ["a", f"b_{kind}", "c", "d"]
    try:
        for path in paths:
            decoder.prefetch(stands_in, path, **{kind: kind})
        got = []
        for path in paths:
            try:
                got.append(decoder.call(stands_in, path, **{kind: kind}))
            except VideoError as err:
                got.append(err)
        assert got[0] == "A" and got[2:] == ["C", "D"]
        assert isinstance(got[1], VideoError) and got[1].path == f"b_{kind}" and reason in got[1].reason
    finally:
        decoder.close()
