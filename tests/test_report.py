"""`vidclf evaluate --report DIR`: a complete, self-contained folder; galleries that list exactly the
evaluation's errors in order of confidence; filmstrips that are the clips the model was fed; neighbours
that find a duplicated clip; a real browser that loads the page."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
import torch
from PIL import Image

from tests.test_cli import invoke

FRAMES, SIZE = 8, 32  # the `trained` fixture's clip
VIEWS = 4  # the default 3 clips: the centre clip, then the three spread clips


class Page(HTMLParser):
    """What a report page links to, and the videos of each gallery with their pictures."""

    def __init__(self, html: str):
        super().__init__()
        self.links: list[str] = []  # every href and src
        self.cards: dict[str, list[dict]] = {"errors": [], "unsure": []}
        self.section = None
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.links += [a[key] for key in ("href", "src") if key in a]
        if tag == "section":
            self.section = a.get("id")
        elif tag == "article":
            self.cards[self.section].append({"path": a["data-path"], "strips": [], "animation": None})
        elif tag == "img" and self.section in self.cards:
            card = self.cards[self.section][-1]
            if a.get("class") == "animation":
                card["animation"] = a["src"]
            else:
                card["strips"].append(a["src"])

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def data_with_a_bad_file(synth_data, tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("report") / "data"
    shutil.copytree(synth_data, data)
    (data / "left" / "zz_bad.mp4").write_text("not a video")
    return data


@pytest.fixture(scope="module")
def report(trained, data_with_a_bad_file, tmp_path_factory):
    """One report over every video (18 and a bad one), with its JSON, written once for several tests."""
    folder = tmp_path_factory.mktemp("report") / "out"
    result = invoke("evaluate", "--model", trained, "--data", data_with_a_bad_file, "--split", "all", "--format",
                    "json", "--workers", "0", "--report", folder, "--animate")
    assert result.exit_code == 1, result.output  # the bad file, as without --report
    return folder, json.loads(result.stdout), Page((folder / "index.html").read_text(encoding="utf-8"))


def test_the_folder_holds_every_picture_and_links_out_only_to_videos(report, data_with_a_bad_file):
    folder, evaluation, page = report
    videos = {p.resolve() for p in data_with_a_bad_file.rglob("*.mp4")}
    pictures = [link for link in page.links if not link.startswith(("#", "file:"))]
    assert {"confusion.png", "curves.png", "metrics.csv"} <= set(pictures)
    for link in pictures:
        assert not urlparse(link).scheme and not Path(link).is_absolute(), link  # relative: the folder moves whole
        assert (folder / link).resolve().is_relative_to(folder.resolve()), link
        assert (folder / link).is_file(), link
    outside = [Path(unquote(urlparse(link).path)) for link in page.links if link.startswith("file:")]
    assert outside and set(outside) <= videos  # the video links, and nothing else
    assert not [link for link in page.links if link.startswith(("http:", "https:", "//"))]


def test_json_on_stdout_is_unchanged_by_the_report(report, trained, data_with_a_bad_file):
    _, evaluation, _ = report
    plain = invoke("evaluate", "--model", trained, "--data", data_with_a_bad_file, "--split", "all", "--format",
                   "json", "--workers", "0")
    assert json.loads(plain.stdout) == evaluation


def test_the_unreadable_video_is_listed_with_its_reason(report):
    _, evaluation, page = report
    (failure,) = evaluation["failed"]
    assert "zz_bad.mp4" in failure["error"] and ":" in failure["error"]  # path: reason
    assert failure["error"] in "".join(page.text)


def test_the_galleries_list_exactly_the_errors_most_confident_first(report, trained, data_with_a_bad_file):
    _, evaluation, page = report
    clips = sorted(str(p) for p in data_with_a_bad_file.rglob("*.mp4") if p.name != "zz_bad.mp4")
    predicted = invoke("predict", *clips, "--model", trained, "--format", "json", "--workers", "0", "--top-k", "1")
    records = json.loads(predicted.stdout)  # the same views, through predict: an independent account
    errors = [r for r in records if r["label"] != Path(r["path"]).parent.name]
    right = [r for r in records if r["label"] == Path(r["path"]).parent.name]
    confusion = np.array(evaluation["confusion_matrix"])
    assert len(errors) == confusion.sum() - confusion.trace()
    assert [c["path"] for c in page.cards["errors"]] == [r["path"] for r in sorted(errors, key=lambda r: -r["score"])]
    assert [c["path"] for c in page.cards["unsure"]] == [r["path"] for r in sorted(right, key=lambda r: r["score"])]


def test_each_shown_video_has_a_filmstrip_per_view_of_the_models_frames(report):
    folder, _, page = report
    cards = page.cards["errors"] + page.cards["unsure"]
    assert len(cards) == 18
    for card in cards:
        assert len(card["strips"]) == VIEWS
        for strip in card["strips"]:
            assert Image.open(folder / strip).size == (FRAMES * SIZE, SIZE)  # the model's frames, at its size
        animation = Image.open(folder / card["animation"])
        assert animation.n_frames == FRAMES and animation.size == (SIZE, SIZE)


def test_filmstrips_are_the_clips_evaluation_fed_the_model(trained, synth_data, tmp_path, monkeypatch):
    import vidclf.evaluate

    fed = {}  # path → uint8 (V, L, H, W, 3): each video's rows of the batches the model was run on
    real = vidclf.evaluate.iter_logits

    def recording(model, loader, *args, **kwargs):
        for batch, logits in real(model, loader, *args, **kwargs):
            for row in range(0, len(batch.lengths), batch.views):
                path = loader.dataset.samples[int(batch.indices[row])].path
                fed[path] = batch.clips[row : row + batch.views, : int(batch.lengths[row])].numpy().copy()
            yield batch, logits

    monkeypatch.setattr(vidclf.evaluate, "iter_logits", recording)
    folder = tmp_path / "out"
    result = invoke("evaluate", "--model", trained, "--data", synth_data, "--split", "all", "--workers", "0",
                    "--batch-size", "3", "--clips", "2", "--crops", "3", "--report", folder, "--gallery", "4")
    assert result.exit_code == 0, result.output
    page = Page((folder / "index.html").read_text(encoding="utf-8"))
    cards = page.cards["errors"] + page.cards["unsure"]
    assert 4 <= len(cards) <= 8
    for card in cards:
        clip = fed[card["path"]]
        assert clip.shape == (1 + 2 * 3, FRAMES, SIZE, SIZE, 3) and len(card["strips"]) == len(clip)
        for view, strip in zip(clip, card["strips"]):
            shown = np.asarray(Image.open(folder / strip), dtype=np.float64)  # (H, L·W, 3), frames left to right
            frames = shown.reshape(SIZE, FRAMES, SIZE, 3).transpose(1, 0, 2, 3)
            error = np.abs(frames[:, None] - view[None].astype(np.float64)).mean(axis=(2, 3, 4))  # (shown, fed)
            assert (error.diagonal() < 3).all(), error  # JPEG's few levels; a frame off by one is 7+ away
            assert (error.argmin(axis=1) == np.arange(FRAMES)).all(), error


def test_neighbours_find_a_training_videos_copy_in_the_validation_split(trained, synth_data, tmp_path):
    data = tmp_path / "data"
    for video in synth_data.rglob("*.mp4"):
        (data / "train" / video.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(video, data / "train" / video.parent.name / video.name)
    originals = sorted((data / "train").rglob("*.mp4"))
    for moved in originals[1::6]:  # three other videos make up the rest of the validation split
        (data / "val" / moved.parent.name).mkdir(parents=True, exist_ok=True)
        moved.rename(data / "val" / moved.parent.name / moved.name)
    original = originals[0]
    other_class = next(d.name for d in (data / "val").iterdir() if d.name != original.parent.name)
    duplicate = data / "val" / other_class / "duplicate.mp4"  # the same clip under another label
    shutil.copy(original, duplicate)
    folder = tmp_path / "out"
    result = invoke("evaluate", "--model", trained, "--data", data, "--split", "val", "--workers", "0",
                    "--report", folder, "--neighbours")
    assert result.exit_code == 0, result.output
    html = (folder / "index.html").read_text(encoding="utf-8")
    page = Page(html)
    cards = page.cards["errors"] + page.cards["unsure"]
    assert {c["path"] for c in cards} == {str(p) for p in (data / "val").rglob("*.mp4")}
    article = html[html.index(f'data-path="{duplicate}"'):]
    near = article[article.index('class="near"'):article.index("</article>")]
    first = Page(near).links[0]
    assert Path(unquote(urlparse(first).path)) == original.resolve()
    assert "1.000" in near.split("·")[0]  # the cosine similarity of identical embeddings


def test_a_folder_that_cannot_be_written_fails_at_once_in_one_line(trained, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("a report folder cannot be made inside a file")
    result = invoke("evaluate", "--model", trained, "--report", blocker / "out")
    assert result.exit_code == 1 and result.stdout == ""  # before any evaluation
    assert result.stderr.strip() == f"error: {blocker / 'out'}: cannot write: Not a directory"
    assert invoke("evaluate", "--model", trained, "--neighbours").exit_code == 2  # needs --report


def test_pick_orders_errors_by_confidence_and_skips_unreadable_videos():
    from vidclf.report.gallery import pick

    probabilities = torch.tensor([[0.6, 0.4], [0.2, 0.8], [float("nan")] * 2, [0.9, 0.1], [0.45, 0.55], [0.3, 0.7]])
    labels = torch.tensor([1, 0, 0, 0, 1, 0])
    errors, unsure = pick(probabilities, labels, limit=2)
    assert errors.shown == [1, 5] and errors.total == 3  # 0.8, 0.7 (then 0.6, left out)
    assert unsure.shown == [4, 3] and unsure.total == 2  # 0.55, 0.9: the least sure first


def test_a_large_evaluation_caps_the_gallery_and_says_how_many_are_left_out(trained, synth_data, tmp_path):
    """100 classes, 10,000 videos: the page shows the capped galleries and stays small."""
    from vidclf import checkpoint
    from vidclf.data.files import Sample
    from vidclf.evaluate import compute_metrics
    from vidclf.report import Evaluated, Selection, write
    from vidclf.report.gallery import pick

    clf = checkpoint.load_classifier(trained, device=torch.device("cpu"))
    videos, n = 10_000, 100
    clf.classes = [f"class {i:03d}" for i in range(n)]  # the page only names them; the videos are the fixture's
    files = sorted(str(p) for p in synth_data.rglob("*.mp4"))
    generator = torch.Generator().manual_seed(0)
    samples = [Sample(files[i % len(files)], int(torch.randint(n, (1,), generator=generator))) for i in range(videos)]
    probabilities = torch.rand(videos, n, generator=generator).softmax(dim=1)
    labels = torch.tensor([s.label for s in samples])
    confusion = torch.bincount(labels * n + probabilities.argmax(dim=1), minlength=n * n).view(n, n)
    evaluation = {"clip_accuracy": 0.0, **compute_metrics(confusion, top_k_correct=0, classes=clf.classes, k=5),
                  "failed": [{"path": f"lost/{i}.mp4", "error": f"lost/{i}.mp4: no such file"} for i in range(3)]}
    errors, unsure = pick(probabilities, labels, limit=10)
    evaluated = Evaluated(samples, "big", "val", (1, 1))
    index = write(tmp_path / "out", Selection(probabilities, errors, unsure, {}), clf=clf,
                  checkpoint=checkpoint.load(trained), evaluated=evaluated, evaluation=evaluation)
    html = index.read_text(encoding="utf-8")
    page = Page(html)
    assert len(page.cards["errors"]) == 10 and len(page.cards["unsure"]) == 10
    assert f"{errors.total - 10} more not shown" in html and f"{unsure.total - 10} more not shown" in html
    assert html.count("<tr>") == n + 1  # the per-class table: every class
    assert len(html) < 300_000


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (.ci/run installs it as root)")
def test_a_browser_loads_the_page_and_sorts_the_class_table(report, tmp_path):
    folder, evaluation, _ = report
    shot = tmp_path / "shot.png"
    shown = _chromium(f"--screenshot={shot}", "--window-size=1280,1600", (folder / "index.html").as_uri())
    assert "Uncaught" not in shown.stderr, shown.stderr[-3000:]
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape == (1600, 1280, 3) and len(np.unique(image.reshape(-1, 3), axis=0)) > 100  # drawn, not blank
    # Click the F1 column twice (descending) in a copy of the page, and read the order back from the console.
    probe = folder / "sort-probe.html"
    probe.write_text((folder / "index.html").read_text(encoding="utf-8").replace("</body>", CLICK_F1 + "</body>"),
                     encoding="utf-8")
    try:
        sorted_page = _chromium("--dump-dom", probe.as_uri())
    finally:
        probe.unlink()
    logged = [line for line in sorted_page.stderr.splitlines() if "f1-order" in line]
    assert logged, sorted_page.stderr[-3000:]
    order = json.loads(logged[0].split('"f1-order ', 1)[1].rsplit('"', 1)[0].replace('\\"', '"'))
    f1 = {r["class"]: r["f1"] for r in evaluation["per_class"]}
    assert sorted(order) == sorted(f1)
    assert [f1[c] for c in order] == sorted(f1.values(), reverse=True)


CLICK_F1 = """<script>
const f1 = [...document.querySelectorAll("table.sortable th")].find(th => th.textContent === "F1");
f1.click(); f1.click();
console.log("f1-order " + JSON.stringify([...document.querySelector("table.sortable").tBodies[0].rows]
  .map(r => r.cells[0].textContent)));
</script>"""


def _chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--enable-logging=stderr", *args], capture_output=True, text=True, timeout=120)


def test_the_report_under_torchrun_equals_one_process(trained, data_with_a_bad_file, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    folder = tmp_path / "ranks"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           "-m", "vidclf", "evaluate", "--model", str(trained), "--data", str(data_with_a_bad_file), "--split", "all",
           "--format", "json", "--workers", "0", "--device", "cpu", "--quiet", "--report", str(folder),
           "--neighbours", "--gallery", "5"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]  # the bad file
    single = tmp_path / "single"
    alone = invoke("evaluate", "--model", trained, "--data", data_with_a_bad_file, "--split", "all", "--format",
                   "json", "--workers", "0", "--quiet", "--report", single, "--neighbours", "--gallery", "5")
    assert json.loads(done.stdout) == json.loads(alone.stdout)
    ranks, one = (Page((f / "index.html").read_text(encoding="utf-8")) for f in (folder, single))
    assert ranks.cards == one.cards and ranks.links == one.links  # the same videos, pictures and neighbours
    assert len(ranks.cards["errors"]) + len(ranks.cards["unsure"]) == 10
