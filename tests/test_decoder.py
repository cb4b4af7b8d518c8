"""read_ahead: decoding overlaps its consumer without changing what the consumer sees."""

import threading

import pytest

from vidclf.data.decoder import read_ahead


def test_read_ahead_yields_every_item_in_order_and_raises_where_the_source_failed():
    def source():
        yield from range(5)
        raise ValueError("video.mp4: broken at frame 5")

    seen = []
    with pytest.raises(ValueError, match="broken at frame 5"):
        for item in read_ahead(source(), depth=2):
            seen.append(item)
    assert seen == [0, 1, 2, 3, 4]


def test_a_consumer_that_stops_early_closes_the_source_and_leaves_no_thread():
    closed = threading.Event()

    def source():
        try:
            yield from range(1000)
        finally:
            closed.set()  # where Decoder.iterate kills a child left mid-video

    items = read_ahead(source(), depth=2)
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()
    assert closed.is_set()
    assert not any(t.name == "vidclf-read-ahead" for t in threading.enumerate())
