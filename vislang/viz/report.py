"""A self-contained HTML report of a captioning run: metrics beside the baselines, training curves, and a
gallery of test images with the generated caption, the references and the per-word attention maps."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from PIL import Image
from torch import Tensor

from vislang.data.images import load_image
from vislang.data.records import Record
from vislang.utils.io import atomic_open, atomic_save_image
from vislang.viz.attention import attention_figure

REPORTED = ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr-D", "METEOR", "SPICE")
"""Metrics shown in the tables, in order (those of ``vislang.tasks.caption_eval.REPORTED``)."""


class CaptionLike(Protocol):
    """One generated caption: its text, words and per-word attention ((L, h, w) or None)."""

    @property
    def text(self) -> str: ...

    @property
    def words(self) -> Sequence[str]: ...

    @property
    def attention(self) -> Tensor | None: ...


class CaptionerLike(Protocol):
    """What the report needs from a captioner: captions of PIL images."""

    def caption(self, images: Sequence[Image.Image], *, beam: int = 1,
                length_penalty: float = 0.0) -> Sequence[CaptionLike]: ...


class CaptionEvaluationLike(Protocol):
    """What the report needs from a caption evaluation (``vislang.tasks.caption_eval.CaptionEvaluation``)."""

    @property
    def split(self) -> str: ...

    @property
    def n_images(self) -> int: ...

    @property
    def corpus(self) -> dict[str, dict[str, float]]: ...

    @property
    def records(self) -> Sequence[Record]: ...


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #222; line-height: 1.4; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.25rem; margin-top: 2rem; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: .5rem 0 1rem; }
th, td { border: 1px solid #ddd; padding: .3rem .7rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f4f4f4; } td.best { font-weight: 700; background: #eef7ee; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 1rem; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: .6rem; background: #fafafa; }
.card img.thumb { width: 96px; height: 96px; image-rendering: auto; float: left; margin: 0 .6rem .4rem 0;
                  border: 1px solid #eee; background: white; }
.card .gen { font-weight: 600; } .card .refs { color: #555; font-size: .9rem; clear: both; }
.card img.att { width: 100%; margin-top: .4rem; border: 1px solid #eee; }
img.curves { max-width: 100%; border: 1px solid #ddd; }
"""


def _metric_table(ev: CaptionEvaluationLike) -> str:
    systems = list(ev.corpus)
    metrics = [m for m in REPORTED if any(m in ev.corpus[s] for s in systems)]
    head = "".join(f"<th>{html.escape(s)}</th>" for s in systems)
    rows = []
    for m in metrics:
        vals = [ev.corpus[s].get(m) for s in systems]
        best = max((round(v, 3) for v in vals if v is not None), default=0.0)
        cells = "".join(
            f'<td class="{"best" if v is not None and best > 0 and round(v, 3) == best else ""}">'
            f'{"" if v is None else f"{v:.3f}"}</td>' for v in vals)
        rows.append(f"<tr><td>{html.escape(m)}</td>{cells}</tr>")
    return f"<table><tr><th>metric</th>{head}</tr>{''.join(rows)}</table>"


def _gallery(ev: CaptionEvaluationLike, captioner: CaptionerLike, assets: Path, slug: str, n: int, beam: int,
             length_penalty: float) -> str:
    if not ev.records:
        return ""
    step = max(1, len(ev.records) // n)
    picks = list(range(0, len(ev.records), step))[:n]
    records = [ev.records[i] for i in picks]
    images = [load_image(r.image) for r in records]
    results = captioner.caption(images, beam=beam, length_penalty=length_penalty)
    cards = []
    for k, (rec, image, cap) in enumerate(zip(records, images, results)):
        thumb = f"{slug}_{k}.png"
        atomic_save_image(assets / thumb, image.resize((96, 96)))
        att_html = ""
        if cap.attention is not None:
            att = f"{slug}_{k}_attention.png"
            h, w = cap.attention.shape[1:]
            fig = attention_figure(image, cap.words, cap.attention.flatten(1), (h, w), cap.text, cell=96, columns=6)
            atomic_save_image(assets / att, fig)
            att_html = f'<img class="att" src="{assets.name}/{att}" alt="attention maps for each word">'
        refs = "<br>".join(html.escape(c) for c in rec.captions[:3])
        cards.append(f'<div class="card"><img class="thumb" src="{assets.name}/{thumb}" alt="test image">'
                     f'<div class="gen">{html.escape(cap.text) or "<i>(empty)</i>"}</div>'
                     f'<div class="refs">references:<br>{refs}</div>{att_html}</div>')
    return f'<div class="gallery">{"".join(cards)}</div>'


def write_report(run_dir: str | os.PathLike, evaluations: Sequence[CaptionEvaluationLike],
                 captioner: CaptionerLike,
                 *, title: str = "vislang captioning run", notes: str = "", gallery_size: int = 6,
                 beam: int = 1, length_penalty: float = 0.0) -> Path:
    """Write ``run_dir/report.html`` (with images in ``run_dir/report_files/``); returns its path."""
    run_dir = Path(run_dir)
    assets = run_dir / "report_files"
    assets.mkdir(parents=True, exist_ok=True)
    parts = [f"<h1>{html.escape(title)}</h1>", f'<p class="sub">{html.escape(notes)}</p>' if notes else ""]
    parts.append("<h2>Metrics</h2><p>COCO caption metrics (pycocoevalcap-exact BLEU, ROUGE-L, CIDEr-D) of "
                 "the model beside its baselines: the caption of the nearest training image in the model's "
                 "own encoder space (and, for judged captions, in the judge's space), and the most frequent "
                 "training caption. Best per row in bold.</p>")
    for ev in evaluations:
        parts.append(f"<h3>{html.escape(ev.split)} &middot; {ev.n_images} images</h3>{_metric_table(ev)}")
    if (run_dir / "curves.png").exists():
        parts.append('<h2>Training curves</h2><img class="curves" src="curves.png" alt="training curves">')
    for i, ev in enumerate(evaluations):
        parts.append(f"<h2>Gallery: {html.escape(ev.split)}</h2>")
        parts.append(_gallery(ev, captioner, assets, f"s{i}", gallery_size, beam, length_penalty))
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>\n")
    out = run_dir / "report.html"
    with atomic_open(out, "w", encoding="utf-8") as f:
        f.write(page)
    return out
