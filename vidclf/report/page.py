"""The report's HTML: one self-contained page (its style and its few lines of script inline, nothing
fetched from the network), so the folder opens from disk in any browser, also on a machine offline.

Only presentation lives here: what to show is decided by the caller (`report/__init__.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from pathlib import Path


@dataclass
class Card:
    """One video of a gallery."""

    path: str
    truth: str
    truth_score: float  # the probability the model gave the true class
    topk: list[tuple[str, float]]  # (class, probability), most likely first
    strips: list[tuple[str, str]] = field(default_factory=list)  # (which view, image path inside the report)
    frames: int = 0  # frames per strip, for the separators the page draws between them
    frame_size: int = 0  # pixels per frame as shown (the model's size, enlarged when small)
    animation: str | None = None  # image path inside the report
    neighbours: list[tuple[str, str, float]] = field(default_factory=list)  # (path, class, cosine similarity)
    error: str | None = None  # why its frames could not be shown
    labels: tuple[list[str], list[str]] | None = None  # multi-label: (true labels, labels predicted)


@dataclass
class Gallery:
    anchor: str
    title: str
    note: str
    cards: list[Card]
    total: int  # videos of this kind: those past the cards are counted, not shown


def render(*, title: str, settings: list[tuple[str, str]], metrics: list[tuple[str, str]],
           failed: list[dict], images: dict[str, str], per_class: list[dict], confusion: list[list[int]] | None,
           classes: list[str], galleries: list[Gallery]) -> str:
    """The whole page. `images` maps confusion, and curves and metrics_csv if any, to paths inside the report
    (a multi-label model has no confusion matrix: None, and no image)."""
    nav = [("summary", "summary"), ("classes", "classes")] + [(g.anchor, g.title.lower()) for g in galleries]
    nav += [("training", "training")] if "curves" in images else []
    body = [
        f"<header><h1>{escape(title)}</h1><nav>"
        + "".join(f'<a href="#{a}">{escape(t)}</a>' for a, t in nav) + "</nav></header><main>",
        _summary(settings, metrics, failed),
        _classes(per_class, confusion, classes, images.get("confusion")),
        *(_gallery(g) for g in galleries),
        _training(images) if "curves" in images else "",
        "</main>",
    ]
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
            + "\n".join(body) + f"<script>{SORT_SCRIPT}</script></body></html>\n")


def _summary(settings: list[tuple[str, str]], metrics: list[tuple[str, str]], failed: list[dict]) -> str:
    cards = "".join(f'<div class="metric"><b>{escape(v)}</b><span>{escape(k)}</span></div>' for k, v in metrics)
    rows = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in settings)
    unreadable = ""
    if failed:
        items = "".join(f"<li><code>{escape(f['error'])}</code></li>" for f in failed)
        unreadable = (f'<div class="failed"><h3>{len(failed)} unreadable video{"s" if len(failed) != 1 else ""}'
                      f" (not counted)</h3><ul>{items}</ul></div>")
    return (f'<section id="summary"><h2>Summary</h2><div class="metrics">{cards}</div>{unreadable}'
            f'<details><summary>checkpoint and settings</summary><dl class="settings">{rows}</dl></details></section>')


def _classes(per_class: list[dict], confusion: list[list[int]] | None, classes: list[str], image: str | None) -> str:
    """The per-class table (sortable) beside the confusion matrix, when there is one."""
    columns = ("class", "precision", "recall", "F1", "videos") + (("most often taken for",) if confusion else ())
    head = "".join(f"<th>{c}</th>" for c in columns)
    rows = []
    for i, row in enumerate(per_class):
        confused = f"<td>{_confused_with(confusion[i], i, classes)}</td>" if confusion else ""
        rows.append(f"<tr><td>{escape(row['class'])}</td>"
                    + "".join(f'<td data-value="{row[m]:.6f}">{row[m]:.3f}</td>' for m in ("precision", "recall", "f1"))
                    + f"<td>{row['support']}</td>{confused}</tr>")
    table = (f'<div class="scroll"><table class="sortable"><thead><tr>{head}</tr></thead>'
             f'<tbody>{"".join(rows)}</tbody></table><p class="note">Click a column to sort by it.</p></div>')
    figure = (f'<figure><a href="{escape(image)}"><img src="{escape(image)}" alt="confusion matrix, rows: the true '
              f'classes"></a></figure>') if image else ""
    return f'<section id="classes"><h2>Classes</h2><div class="side">{table}{figure}</div></section>'


def _training(images: dict[str, str]) -> str:
    csv = f' (<a href="{escape(images["metrics_csv"])}">metrics.csv</a>)' if "metrics_csv" in images else ""
    return (f'<section id="training"><h2>Training</h2><figure><img src="{escape(images["curves"])}" '
            f'alt="training curves"><figcaption>loss and accuracy per epoch{csv}</figcaption></figure></section>')


def _confused_with(row: list[int], own: int, classes: list[str]) -> str:
    """The class this one's videos were most often predicted as instead, with the count."""
    others = [(count, j) for j, count in enumerate(row) if j != own and count > 0]
    if not others:
        return ""
    count, j = max(others, key=lambda c: (c[0], -c[1]))
    return f"{escape(classes[j])} ({count})"


def _gallery(gallery: Gallery) -> str:
    cards = "".join(_card(c, n) for n, c in enumerate(gallery.cards, 1))
    more = gallery.total - len(gallery.cards)
    rest = f'<p class="more">{more} more not shown (<code>--gallery</code> shows more).</p>' if more > 0 else ""
    empty = '<p class="note">None.</p>' if gallery.total == 0 else ""
    return (f'<section id="{gallery.anchor}" class="gallery"><h2>{escape(gallery.title)} '
            f'<small>{gallery.total}</small></h2><p class="note">{escape(gallery.note)}</p>{empty}{cards}{rest}</section>')


def _card(card: Card, number: int) -> str:
    """A video: its path (a link to the file), the verdict and the top classes, then what the model saw,
    a view a row across the page's whole width (16 frames need it)."""
    predicted, score = card.topk[0] if card.topk else ("", 0.0)
    verdict = "right" if predicted == card.truth else "wrong"
    truths = {card.truth}
    line = (f'true class <b>{escape(card.truth)}</b> {card.truth_score:.3f} · predicted <b class="{verdict}">'
            f'{escape(predicted)}</b> {score:.3f}')
    if card.labels is not None:  # multi-label: the sets
        (true, shown), truths = card.labels, set(card.labels[0])
        verdict = "right" if set(shown) == truths else "wrong"
        line = (f'true labels <b>{escape(", ".join(true) or "none")}</b> · predicted <b class="{verdict}">'
                f'{escape(", ".join(shown) or "none")}</b>')
    bars = "".join(
        f'<li class="{"truth" if label in truths else ""}"><span class="label">{escape(label)}</span>'
        f'<span class="bar"><i style="width:{100 * p:.1f}%"></i></span><span class="score">{p:.3f}</span></li>'
        for label, p in card.topk)
    animation = (f'<img class="animation" src="{escape(card.animation)}" width="{card.frame_size}" '
                 f'height="{card.frame_size}" loading="lazy" alt="the centre clip, playing">' if card.animation else "")
    strips = "".join(
        f'<div class="strip"><span>{escape(caption)}</span><div class="frames" style="--n:{card.frames}">'
        f'<img src="{escape(src)}" width="{card.frames * card.frame_size}" height="{card.frame_size}" '
        f'loading="lazy" alt="{escape(caption)}"></div></div>'
        for caption, src in card.strips)
    seen = f'<p class="failed-line">{escape(card.error)}</p>' if card.error else strips
    near = ""
    if card.neighbours:
        near = ('<div class="near">nearest training videos: ' + " · ".join(
            f'<a href="{escape(_file_url(p))}" title="{escape(p)}">{escape(Path(p).name)}</a> '
            f'<b>{escape(label)}</b> {similarity:.3f}' for p, label, similarity in card.neighbours) + "</div>")
    return (f'<article class="video" data-path="{escape(card.path)}"><div class="head"><span class="n">{number}</span>'
            f'<a href="{escape(_file_url(card.path))}" title="{escape(card.path)}">{escape(card.path)}</a></div>'
            f'<div class="body"><div class="verdict"><div><div class="truth-line">{line}</div>'
            f'<ol class="topk">{bars}</ol></div>{animation}</div>{seen}{near}</div></article>')


def _file_url(path: str) -> str:
    """A link to the video itself: the one kind of link that leaves the report's folder."""
    return Path(path).resolve().as_uri()


STYLE = """
:root { --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg: #f6f8fa; --bad: #cf222e; --good: #1a7f37;
        --accent: #0969da; --bar: #8fb8e8; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif;
       color: var(--ink); background: var(--bg); }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
body > header { background: #fff; border-bottom: 1px solid var(--line); padding: 14px 24px; position: sticky; top: 0;
                z-index: 2; }
h1 { font-size: 20px; margin: 0 0 4px; }
nav a { margin-right: 18px; font-size: 14px; }
main { max-width: 1280px; margin: 0 auto; padding: 4px 24px 48px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 16px 20px; margin: 18px 0;
          scroll-margin-top: 90px; }
h2 { font-size: 18px; margin: 0 0 10px; }
h2 small { color: var(--muted); font-weight: normal; font-size: 15px; margin-left: 6px; }
h3 { font-size: 15px; margin: 0 0 6px; }
.note, figcaption { color: var(--muted); font-size: 13px; margin: 0 0 10px; }
.metrics { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 12px; }
.metric { border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px; }
.metric b { display: block; font-size: 24px; font-variant-numeric: tabular-nums; }
.metric span { color: var(--muted); font-size: 13px; }
.failed { margin-top: 14px; border: 1px solid #f1aeb5; background: #fff5f5; border-radius: 6px; padding: 10px 14px;
          max-height: 16em; overflow: auto; }
.failed ul { margin: 0; padding-left: 20px; }
.failed-line { color: var(--bad); }
code, dd { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px; }
details { margin-top: 14px; }
summary { cursor: pointer; color: var(--accent); }
dl.settings { display: grid; grid-template-columns: max-content 1fr; gap: 3px 18px; margin: 10px 0 0; }
dt { color: var(--muted); }
dd { margin: 0; overflow-wrap: anywhere; }
.side { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
figure { margin: 0; flex: 0 1 auto; max-width: 100%; }
.side figure { flex: 1 1 360px; }
figure img { max-width: 100%; height: auto; display: block; }
.scroll { max-height: 80vh; overflow: auto; flex: none; max-width: 100%; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 12px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th:first-child, td:first-child, th:last-child, td:last-child { text-align: left; }
th { cursor: pointer; user-select: none; background: var(--bg); position: sticky; top: 0; }
th:hover { color: var(--accent); }
th[data-order="asc"]::after { content: " \\25B2"; font-size: 10px; }
th[data-order="desc"]::after { content: " \\25BC"; font-size: 10px; }
.video { border-top: 1px solid var(--line); padding: 12px 0; }
.head { display: flex; gap: 10px; align-items: baseline; font-size: 14px; overflow-wrap: anywhere; }
.head .n { color: var(--muted); font-variant-numeric: tabular-nums; min-width: 2em; }
.truth-line { font-size: 14px; margin: 2px 0 6px; }
.right { color: var(--good); }
.wrong { color: var(--bad); }
.body { margin-left: 2.6em; }
.verdict { display: flex; gap: 28px; align-items: flex-start; margin-bottom: 8px; }
.topk { list-style: none; margin: 0; padding: 0; width: 320px; font-size: 13px; }
.topk li { display: grid; grid-template-columns: 120px 1fr 44px; gap: 8px; align-items: center; }
.topk .label { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.topk li.truth .label { color: var(--good); font-weight: 600; }
.topk .bar { background: #eef1f4; height: 10px; border-radius: 3px; overflow: hidden; }
.topk .bar i { display: block; height: 100%; background: var(--bar); }
.topk .score { text-align: right; font-variant-numeric: tabular-nums; }
.strip { display: flex; align-items: center; gap: 8px; margin-bottom: 3px; }
.strip > span { width: 76px; flex: none; color: var(--muted); font-size: 12px; text-align: right; }
.frames { position: relative; min-width: 0; line-height: 0; }
.frames img { max-width: 100%; height: auto; image-rendering: pixelated; }
.frames::after { content: ""; position: absolute; inset: 0; pointer-events: none;
                 background: repeating-linear-gradient(90deg, transparent 0 calc(100% / var(--n) - 1px),
                                                       #fff calc(100% / var(--n) - 1px) calc(100% / var(--n))); }
.animation { image-rendering: pixelated; border-radius: 4px; flex: none; }
.near { font-size: 13px; color: var(--muted); margin: 8px 0 0; }
.near b { color: var(--ink); font-weight: 600; }
.more { color: var(--muted); font-style: italic; border-top: 1px solid var(--line); padding-top: 10px; }
"""

# Sorts a table by the clicked column: numbers by their data-value, text alphabetically; again reverses.
SORT_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach((th, column) => th.addEventListener("click", () => {
  const up = th.dataset.order !== "asc";
  th.parentElement.querySelectorAll("th").forEach(h => delete h.dataset.order);
  th.dataset.order = up ? "asc" : "desc";
  const key = row => row.cells[column].dataset.value ?? row.cells[column].textContent;
  const body = th.closest("table").tBodies[0];
  const rows = [...body.rows].sort((a, b) => {
    const x = key(a), y = key(b);
    const order = isNaN(x) || isNaN(y) || x === "" || y === "" ? x.localeCompare(y) : x - y;
    return up ? order : -order;
  });
  body.append(...rows);
}));
"""
