"""`vidclf cache`: a fill ahead of training that training then finds warm, in parts, resumable."""

import json
import shutil

from vidclf.data import datasets, video
from tests.test_cli import invoke


def _count_decodes(monkeypatch) -> dict:
    counts = {"whole": 0, "clip": 0, "probe": 0}
    write, load, probe = datasets.write_entry, video.load_clip, video.probe

    def counted(name, fn):
        def call(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)
        return call

    monkeypatch.setattr(datasets, "write_entry", counted("whole", write))
    monkeypatch.setattr(video, "load_clip", counted("clip", load))
    monkeypatch.setattr(video, "probe", counted("probe", probe))
    return counts


def test_train_after_vidclf_cache_decodes_nothing(synth_data, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    filled = invoke("cache", synth_data, "--size", "32", "--cache", cache, "--workers", "2", "-f", "json")
    assert filled.exit_code == 0, filled.output
    report = json.loads(filled.stdout)
    assert report["videos"] == report["written"] == report["present"] == 18 and report["bytes"] > 0
    counts = _count_decodes(monkeypatch)  # training below decodes in this process (--decode-timeout 0)
    trained = invoke("train", "--data", synth_data, "--epochs", "1", "--frames", "8", "--size", "32", "--batch-size",
                     "4", "--workers", "0", "--decode-timeout", "0", "--cache", cache, "--out", tmp_path / "models")
    assert trained.exit_code == 0, trained.output
    assert counts == {"whole": 0, "clip": 0, "probe": 0}


def test_shards_fill_disjoint_parts_and_a_fill_resumes(synth_data, tmp_path):
    parts = []
    for i in range(2):
        result = invoke("cache", synth_data, "--size", "16", "--cache", tmp_path / f"c{i}", "--shard", f"{i}/2",
                        "--workers", "0", "-f", "json")
        assert result.exit_code == 0, result.output
        parts.append({p.name for p in (tmp_path / f"c{i}").rglob("*.jpgs")})
    assert len(parts[0]) == len(parts[1]) == 9 and not parts[0] & parts[1]
    whole = invoke("cache", synth_data, "--size", "16", "--cache", tmp_path / "c0", "--workers", "0", "-f", "json")
    assert json.loads(whole.stdout)["written"] == 9  # only the other part's videos were decoded
    info = json.loads(invoke("cache", synth_data, "--size", "16", "--cache", tmp_path / "c0", "--info", "-f", "json").stdout)
    assert (info["entries"], info["data_cached"], info["data_videos"]) == (18, 18, 18)
    cleared = invoke("cache", "--cache", tmp_path / "c0", "--clear", "-f", "json")
    assert json.loads(cleared.stdout)["freed_bytes"] == info["cache_bytes"] > 0
    assert not list((tmp_path / "c0").rglob("*.jpgs"))


def test_an_unreadable_video_is_listed_and_the_rest_cached(synth_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    (data / "left" / "broken.mp4").write_text("not a video")
    result = invoke("cache", data, "--size", "16", "--cache", tmp_path / "c", "--workers", "0")
    assert result.exit_code == 1
    assert "broken.mp4" in result.stderr and "18 of 19 videos cached" in result.stdout


def test_a_full_disk_ends_the_fill_with_the_reason_and_exit_1(synth_data, tmp_path, monkeypatch):
    import errno

    from vidclf.data import entry

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(entry, "write_atomic", disk_full)
    result = invoke("cache", synth_data, "--size", "16", "--cache", tmp_path / "c", "--workers", "0",
                    "--decode-timeout", "0")
    assert result.exit_code == 1 and "No space left on device" in result.stderr
    assert "0 of 18 videos cached" in result.stdout
