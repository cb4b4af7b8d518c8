"""lanes.py: jobs run in lanes come back in the order they were taken, errors at their place, and
each lane's model gets its share of the cores."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
import torch

from vidclf.lanes import in_lanes


def _source(n: int):
    jobs = iter(range(n))
    return lambda: next(jobs, None)


def _lane(run):
    return lambda _: contextlib.nullcontext(run)


def test_results_come_in_the_order_taken_though_lanes_finish_out_of_order():
    def run(job):
        time.sleep(0.03 if job % 3 == 0 else 0.001)  # every third job is slow
        return job * 10

    assert list(in_lanes(3, _source(20), _lane(run))) == [j * 10 for j in range(20)]


def test_each_job_runs_exactly_once_in_its_lane_with_that_lanes_threads():
    seen: list[tuple[int, int, int]] = []

    @contextlib.contextmanager
    def lane(i):
        yield lambda job: seen.append((job, i, torch.get_num_threads())) or job

    previous = torch.get_num_threads()
    assert list(in_lanes(2, _source(9), lane, threads=1)) == list(range(9))
    assert sorted(job for job, _, _ in seen) == list(range(9)) and {t for _, _, t in seen} == {1}
    assert torch.get_num_threads() == previous  # the caller's own setting is untouched


def test_an_error_is_raised_at_its_place_after_the_results_before_it():
    def run(job):
        if job == 4:
            raise ValueError("job 4 failed")
        return job

    got = []
    with pytest.raises(ValueError, match="job 4 failed"):
        for result in in_lanes(2, _source(10), _lane(run)):
            got.append(result)
    assert got == [0, 1, 2, 3]


def test_a_source_that_fails_ends_the_results_there():
    jobs = iter([0, 1, 2])

    def take():
        job = next(jobs, None)
        if job is None:
            raise OSError("the video ended badly")
        return job

    got = []
    with pytest.raises(OSError, match="ended badly"):
        for result in in_lanes(2, take, _lane(lambda job: job)):
            got.append(result)
    assert got == [0, 1, 2]


def test_lanes_stay_within_twice_their_count_ahead_and_stop_with_the_caller():
    taken = []
    source = _source(1000)

    def take():
        job = source()
        taken.append(job)
        return job

    results = in_lanes(2, take, _lane(lambda job: job))
    assert next(results) == 0
    time.sleep(0.2)  # room for the lanes to run ahead
    assert len(taken) <= 1 + 4
    results.close()
    assert not any(t.name == "vidclf-lane" for t in threading.enumerate())


def test_a_lane_that_cannot_start_fails_the_jobs_it_takes():
    @contextlib.contextmanager
    def lane(i):
        raise OSError("no room for the shared memory")
        yield

    with pytest.raises(OSError, match="no room"):
        list(in_lanes(1, _source(3), lane))


def test_windows_scored_in_lanes_are_each_windows_own_scores_in_order(trained, tmp_path):
    """Batches of windows go to the lanes in turn: each record must still be its own window's."""
    from vidclf.checkpoint import load_classifier
    from vidclf.data import video
    from vidclf.predict import predict_windows
    from vidclf.preprocess import to_model_input
    from vidclf.synth import write_dataset

    (clip,) = write_dataset(tmp_path, classes=1, clips_per_class=1, frames=60, size=32, seed=5)
    clf = load_classifier(trained, device=torch.device("cpu"))
    pre = clf.preprocess
    record = predict_windows(str(clip), clf, device=torch.device("cpu"), window=0.4, stride=0.2, batch_size=2)
    expected = []
    with torch.inference_mode():
        for w in video.iter_windows(clip, window=10, stride=5, num_frames=pre.num_frames, size=pre.size,
                                    sampling=pre.sampling, frame_stride=pre.frame_stride):
            x = torch.from_numpy(w.frames[: w.length]).permute(0, 3, 1, 2)[None]  # (1, T, 3, H, W)
            lengths = torch.tensor([w.length])
            expected.append((w.start / 25, clf.model(to_model_input(x, lengths, pre), lengths).softmax(dim=1)[0]))
    assert len(record["windows"]) == len(expected) > 4  # several batches of two
    for got, (start, probs) in zip(record["windows"], expected):
        assert got["start"] == pytest.approx(start) and got["score"] == pytest.approx(float(probs.max()), abs=1e-5)
        assert got["label"] == clf.classes[int(probs.argmax())]
    mean = torch.stack([p for _, p in expected]).mean(dim=0)
    assert record["score"] == pytest.approx(float(mean.max()), abs=1e-5)
