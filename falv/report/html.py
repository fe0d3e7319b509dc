"""One self-contained HTML page for a labelling run, an evaluation and a training run.

Everything the page shows is inside the file: pictures are base64 ``data:`` URIs,
the style sheet is inline, timelines are inline SVG, there is no script and no
link to anything outside the page (the only ``href`` values are ``#section``
anchors). Every string that comes from a file (labels, paths, messages, CSV
cells, config values) goes through :func:`html.escape`.

Sections, each optional (at least one source is needed):

* **Labels** (``falv label`` output folder, ``labels.jsonl``): a summary with the
  top-1 label counts, then per video a thumbnail (the frame at mid-time, decoded
  with :func:`falv.video.decode.read_frames`; a missing or broken file gets a
  placeholder), its top labels with score bars and a timeline of its segments
  (windows' top labels when there are no segments), one lane per label, a colour
  per label; then the failed inputs with their error.
* **Evaluation** (``falv evaluate`` output folder): the metrics of
  ``metrics.json``, the confusion matrix picture (or a shaded table from
  ``confusion_matrix.csv``), the per-class table of ``per_class.csv``, per-class
  AP, localisation mAP, the views and the failed videos; then a gallery of
  sample predictions from ``predictions.jsonl``: the most confident mistakes
  and correct predictions, each with frames of the video, its true class and
  the top predictions.
* **Training** (a run folder): the best epoch, the per-epoch table,
  ``plots/*.png`` (drawn from ``log.jsonl`` when the folder has none), the class
  distribution of its train and validation videos (``split.json``) and the
  training configuration.
* **Dataset** (any dataset source ``falv train --data`` reads): videos per class
  in each split it has (train, val, test), as a grouped bar chart and a table.
"""

from __future__ import annotations

import base64
import colorsys
import csv
import html
import io
import json
import logging
import math
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from falv.report import ReportError

log = logging.getLogger(__name__)

#: Short side of video thumbnails, pixels.
THUMB_SIDE = 96
#: Seconds a thumbnail may take to decode before the placeholder is shown.
THUMB_TIMEOUT_S = 10.0
#: Videos shown with a card by default (the summary and the error list count them all).
DEFAULT_MAX_VIDEOS = 500
#: Labels shown per video.
TOP_LABELS = 5
#: Cards of each kind (mistakes, correct) in the gallery by default.
DEFAULT_GALLERY = 6
#: Frames shown per gallery card.
GALLERY_FRAMES = 4
#: Confusion matrices up to this many classes are drawn as a table when there is no picture.
MAX_TABLE_CLASSES = 60

# The 20 colours of matplotlib's tab20, reordered so that neighbours differ.
_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:16px 24px}
header h1{margin:0 0 4px;font-size:22px}
header .sub{color:#b0bec5;font-size:13px}
nav{padding:8px 24px;background:#eceff1;font-size:14px}
nav a{margin-right:16px;color:#37474f}
main{padding:8px 24px 40px}
section{margin-top:24px}
h2{border-bottom:2px solid #cfd8dc;padding-bottom:4px}
h3{margin:18px 0 8px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #d7dde0;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eceff1}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;flex-direction:column;gap:10px}
.card{display:flex;gap:14px;background:#fff;border:1px solid #dde3e6;border-radius:6px;padding:10px}
.card.failed{border-color:#e57373;background:#fff5f5}
.thumb{width:160px;min-width:160px;height:96px;object-fit:contain;background:#111;border-radius:4px}
.placeholder{display:flex;align-items:center;justify-content:center;color:#bbb;font-size:12px}
.body{flex:1;min-width:0}
.name{font-weight:600;overflow-wrap:anywhere}
.meta{color:#607d8b;font-size:12px;margin:2px 0 6px}
.lbl{display:flex;align-items:center;gap:6px;font-size:13px;margin:1px 0}
.lbl .bar{height:9px;border-radius:2px}
.lbl .txt{overflow-wrap:anywhere}
.sw{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:5px;vertical-align:-1px}
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:13px;margin:6px 0}
svg.timeline{width:100%;max-width:900px;display:block;margin-top:6px}
.error{color:#c62828;overflow-wrap:anywhere}
.note{color:#607d8b;font-size:13px}
img.plot{max-width:640px;width:100%;border:1px solid #dde3e6;background:#fff;margin:4px 8px 4px 0}
.plots{display:flex;flex-wrap:wrap}
img.strip{height:96px;max-width:420px;object-fit:contain;background:#111;border-radius:4px}
svg.distribution{max-width:100%;height:auto;display:block;margin:6px 0}
details{margin:8px 0}
summary{cursor:pointer;color:#37474f}
"""


# -- small helpers --------------------------------------------------------------------------------


def _e(value: Any) -> str:
    """HTML-escaped text (quotes too, so it is safe inside attributes)."""
    return html.escape(str(value), quote=True)


def data_uri(data: bytes, mime: str) -> str:
    """``data:<mime>;base64,...`` for inlining a picture."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _image_file_uri(path: Path) -> str | None:
    mime = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
            ".svg": "image/svg+xml"}.get(path.suffix.lower())
    try:
        return data_uri(path.read_bytes(), mime or "application/octet-stream") if mime else None
    except OSError:
        return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _fmt(value: Any, digits: int = 4) -> str:
    """Numbers with ``digits`` decimals (integers as they are), anything else as text."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else str(value)
    if value is None:
        return "-"
    return str(value)


def _seconds(value: float | None) -> str:
    if value is None:
        return "?"
    if value >= 3600:
        return f"{int(value // 3600)}:{int(value % 3600 // 60):02d}:{value % 60:04.1f}"
    if value >= 60:
        return f"{int(value // 60)}:{value % 60:04.1f}"
    return f"{value:.1f} s"


def label_colours(labels: Iterable[str]) -> dict[str, str]:
    """A colour per label, in the order given: tab20 first, then evenly spread hues."""
    out: dict[str, str] = {}
    for i, label in enumerate(dict.fromkeys(labels)):
        if i < len(_PALETTE):
            out[label] = _PALETTE[i]
        else:
            hue = (i * 0.618033988749895) % 1.0  # golden-ratio steps keep neighbours apart
            r, g, b = colorsys.hsv_to_rgb(hue, 0.55, 0.85)
            out[label] = f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"
    return out


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, numeric: bool = True) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for cell in row:
            is_num = numeric and _number(cell) is not None
            cells.append(f'<td class="num">{_e(_fmt(cell))}</td>' if is_num else f"<td>{_e(_fmt(cell))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _read_csv(path: Path) -> tuple[list[str], list[list[Any]]] | None:
    """Header and rows of a CSV (numbers parsed), or None when the file is missing or unreadable."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        if path.exists():
            log.warning("%s: cannot read (%s)", path, exc)
        return None
    if not rows:
        return None
    return rows[0], [[_parse_cell(c) for c in row] for row in rows[1:] if row]


def _parse_cell(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
        return value if math.isfinite(value) else text
    except ValueError:
        return text


# -- labels ---------------------------------------------------------------------------------------


def _labels_file(labels_dir: Path) -> Path:
    from falv.labeling.store import LABELS_NAME

    path = labels_dir if labels_dir.is_file() else labels_dir / LABELS_NAME
    if not path.is_file():
        raise ReportError(f"{labels_dir}: no {LABELS_NAME} here; pass the --out folder of `falv label`")
    return path


def _load_records(path: Path) -> list[Any]:
    """The latest record per input (a retried failure replaces the earlier one), in first-seen order."""
    import warnings

    from falv.labeling.records import TruncatedRecordWarning, read_records
    from falv.labeling.store import record_key

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncatedRecordWarning)  # logged by read_records already
        records = read_records(path)
    by_key: dict[str, Any] = {}
    for record in records:
        by_key[record_key(record.path)] = record
    return list(by_key.values())


def _resolve_video(path: str, labels_dir: Path) -> Path:
    p = Path(path)
    if not p.is_absolute() and not p.exists():
        base = labels_dir.parent if labels_dir.is_file() else labels_dir
        if (base / p).exists():
            return base / p
    return p


def thumbnail_uri(path: str | os.PathLike[str], duration: float | None, side: int = THUMB_SIDE) -> str | None:
    """A JPEG ``data:`` URI of the frame at mid-time, or None when the video cannot be read."""
    return frames_uri(path, [duration / 2 if duration else 0.0], side)


def strip_times(duration: float | None, frames: int) -> list[float]:
    """``frames`` times at the centres of equal parts of the video (one at 0 when its length is unknown)."""
    if not duration or duration <= 0:
        return [0.0]
    return [duration * (i + 0.5) / frames for i in range(frames)]


def frames_uri(path: str | os.PathLike[str], times: Sequence[float], side: int = THUMB_SIDE) -> str | None:
    """A JPEG ``data:`` URI of the frames at ``times`` side by side, or None when the video
    cannot be read."""
    try:
        import numpy as np
        from PIL import Image

        from falv.video.decode import read_frames

        frames = read_frames(path, list(times), size=side, timeout=THUMB_TIMEOUT_S)
        image = Image.fromarray(np.concatenate(list(frames), axis=1))
        if max(image.size) > 4 * side * len(frames):  # panoramas: keep the file small
            image.thumbnail((4 * side * len(frames), 4 * side))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=75)
        return data_uri(buffer.getvalue(), "image/jpeg")
    except Exception as exc:  # noqa: BLE001 - a report never fails on one video
        log.info("no frames for %s: %s", path, exc)
        return None


def _timeline_items(record: Any) -> tuple[list[tuple[str, float, float, float]], str]:
    """(label, start, end, score) bars and what they are: segments, else the windows' top label."""
    if record.segments:
        return [(s.label, s.start, s.end, s.score) for s in record.segments], "segments"
    items = [(w.labels[0].label, w.start, w.end, w.labels[0].score) for w in record.windows if w.labels]
    return items, "top label per window"


def timeline_svg(
    items: Sequence[tuple[str, float, float, float]], duration: float | None, colours: Mapping[str, str]
) -> str:
    """An inline SVG: one lane per label, a bar per ``(label, start, end, score)``, a time axis."""
    if not items:
        return ""
    total = max([duration or 0.0] + [end for _, _, end, _ in items])
    if total <= 0:
        total = 1.0
    lanes = list(dict.fromkeys(label for label, *_ in items))
    width, lane_h, gap, axis_h = 1000, 14, 3, 16
    height = len(lanes) * (lane_h + gap) + axis_h
    parts = [f'<svg class="timeline" viewBox="0 0 {width} {height}" '
             f'role="img" aria-label="timeline">',
             f'<rect x="0" y="0" width="{width}" height="{height - axis_h}" fill="#f1f4f5"/>']
    for label, start, end, score in items:
        y = lanes.index(label) * (lane_h + gap)
        x0 = max(0.0, min(start, total)) / total * width
        x1 = max(0.0, min(end, total)) / total * width
        w = max(x1 - x0, 1.5)
        tip = f"{label}: {start:.2f}-{end:.2f} s, score {score:.3f}"
        parts.append(f'<rect x="{x0:.1f}" y="{y}" width="{w:.1f}" height="{lane_h}" rx="2" '
                     f'fill="{colours.get(label, "#999")}"><title>{_e(tip)}</title></rect>')
    y_axis = height - axis_h
    for k in range(6):
        x = k * width / 5
        anchor = "start" if k == 0 else "end" if k == 5 else "middle"
        parts.append(f'<line x1="{x:.0f}" y1="{y_axis}" x2="{x:.0f}" y2="{y_axis + 4}" stroke="#90a4ae"/>')
        parts.append(f'<text x="{x:.0f}" y="{y_axis + 14}" font-size="11" fill="#607d8b" '
                     f'text-anchor="{anchor}">{_e(_seconds(total * k / 5))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _legend(colours: Mapping[str, str], counts: Mapping[str, int] | None = None) -> str:
    items = []
    for label, colour in colours.items():
        count = f" ({counts[label]})" if counts and label in counts else ""
        items.append(f'<span><span class="sw" style="background:{colour}"></span>{_e(label)}{_e(count)}</span>')
    return f'<div class="legend">{"".join(items)}</div>'


def _video_card(record: Any, labels_dir: Path, colours: Mapping[str, str], thumbnails: bool) -> str:
    path = record.path
    name = Path(path).name or path
    uri = thumbnail_uri(_resolve_video(path, labels_dir), record.duration) if thumbnails else None
    thumb = (f'<img class="thumb" src="{uri}" alt="{_e(name)}">' if uri
             else '<div class="thumb placeholder">no preview</div>')
    meta = [_seconds(record.duration) if record.duration is not None else "duration unknown"]
    if record.fps:
        meta.append(f"{record.fps:.3g} fps")
    if record.width and record.height:
        meta.append(f"{record.width}x{record.height}")
    if record.model:
        meta.append(f"model {record.model}")
    body = [f'<div class="name" title="{_e(path)}">{_e(name)}</div>',
            f'<div class="meta">{_e(" · ".join(meta))}</div>']
    if record.error is not None:
        body.append(f'<div class="error">{_e(record.error.type)}: {_e(record.error.message)}</div>')
    for ls in record.labels[:TOP_LABELS]:
        pct = max(0.0, min(1.0, ls.score)) * 100
        colour = colours.get(ls.label, "#90a4ae")
        body.append(f'<div class="lbl"><span class="bar" style="width:{pct * 1.2:.0f}px;background:{colour}"></span>'
                    f'<span class="txt">{_e(ls.label)} <span class="note">{ls.score:.3f}</span></span></div>')
    items, kind = _timeline_items(record)
    if items:
        body.append(f'<div class="note">{_e(kind)}</div>' + timeline_svg(items, record.duration, colours))
    css = "card failed" if record.error is not None else "card"
    return f'<div class="{css}">{thumb}<div class="body">{"".join(body)}</div></div>'


def labels_section(labels_dir: str | os.PathLike[str], *, max_videos: int | None = DEFAULT_MAX_VIDEOS,
                   thumbnails: bool = True) -> str:
    """The labels section (HTML) for a ``falv label`` output folder or its ``labels.jsonl``."""
    labels_dir = Path(labels_dir)
    records = _load_records(_labels_file(labels_dir))
    ok = [r for r in records if r.error is None]
    failed = [r for r in records if r.error is not None]
    top_counts = Counter(r.top.label for r in ok if r.top is not None)
    segment_labels = Counter(s.label for r in ok for s in r.segments)
    window_labels = Counter(w.labels[0].label for r in ok for w in r.windows if w.labels)
    ordered = [label for label, _ in (top_counts + segment_labels + window_labels).most_common()]
    ordered += sorted({ls.label for r in ok for ls in r.labels[:TOP_LABELS]} - set(ordered))
    colours = label_colours(ordered)
    total = sum(r.duration or 0.0 for r in ok)
    out = ['<section id="labels"><h2>Labels</h2>',
           f'<p>{len(records)} videos: {len(ok)} labelled, {len(failed)} failed; '
           f'{_e(_seconds(total))} of video. Source: <code>{_e(labels_dir)}</code></p>']
    models = sorted({r.model for r in records if r.model})
    if models:
        out.append(f'<p class="note">model: {_e(", ".join(models))}</p>')
    if top_counts:
        out.append("<h3>Top-1 label per video</h3>")
        rows = [(f'<span class="sw" style="background:{colours[k]}"></span>{_e(k)}', n, f"{n / len(ok):.1%}")
                for k, n in top_counts.most_common()]
        out.append("<table><thead><tr><th>label</th><th>videos</th><th>share</th></tr></thead><tbody>"
                   + "".join(f'<tr><td>{a}</td><td class="num">{b}</td><td class="num">{_e(c)}</td></tr>'
                             for a, b, c in rows) + "</tbody></table>")
    if any(_timeline_items(r)[0] for r in ok):
        out.append("<h3>Legend</h3>" + _legend({k: colours[k] for k in ordered if k in colours}))
    shown = ok if max_videos is None else ok[:max_videos]
    if len(shown) < len(ok):
        out.append(f'<p class="note">video cards: the first {len(shown)} of {len(ok)} labelled videos</p>')
    if shown:
        out.append("<h3>Videos</h3>")
        out.append('<div class="cards">' + "".join(_video_card(r, labels_dir, colours, thumbnails) for r in shown)
                   + "</div>")
    if failed:
        out.append(f'<h3 id="label-errors">Failed ({len(failed)})</h3>')
        out.append(_table(["path", "error", "message"],
                          [(r.path, r.error.type, r.error.message) for r in failed], numeric=False))
    out.append("</section>")
    return "".join(out)


# -- evaluation -----------------------------------------------------------------------------------

_METRIC_ROWS = (
    ("top1", "top-1 accuracy"),
    ("top5", "top-5 accuracy"),
    ("mean_class_accuracy", "mean class accuracy"),
    ("map", "mAP"),
    ("precision_macro", "precision (macro)"),
    ("recall_macro", "recall (macro)"),
    ("f1_macro", "F1 (macro)"),
    ("precision_weighted", "precision (weighted)"),
    ("recall_weighted", "recall (weighted)"),
    ("f1_weighted", "F1 (weighted)"),
    ("num_videos", "videos"),
    ("clips", "clips per video"),
    ("crops", "crops per clip"),
    ("model", "model"),
    ("data", "data"),
)
_SHOWN_KEYS = {k for k, _ in _METRIC_ROWS} | {"failed", "classes", "per_class_ap", "localization", "views"}


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path.parent}: no {path.name} here; {what}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: cannot read ({exc})") from None


def _confusion_table(path: Path) -> str:
    table = _read_csv(path)
    if table is None:
        return ""
    header, rows = table
    if len(rows) > MAX_TABLE_CLASSES:
        return f'<p class="note">{len(rows)} classes: too many to draw as a table; see {_e(path.name)}</p>'
    values = [_number(c) for row in rows for c in row[1:]]
    top = max([v for v in values if v is not None] or [1.0]) or 1.0
    out = ["<table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr></thead><tbody>"]
    for row in rows:
        cells = [f"<th>{_e(_fmt(row[0]))}</th>"] if row else []
        for cell in row[1:]:
            v = _number(cell)
            shade = f' style="background:rgba(30,136,229,{0.85 * v / top:.2f})"' if v is not None and v > 0 else ""
            cells.append(f'<td class="num"{shade}>{_e(_fmt(cell))}</td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _per_class_table(eval_dir: Path, metrics: Mapping[str, Any]) -> str:
    table = _read_csv(eval_dir / "per_class.csv")
    ap = metrics.get("per_class_ap")
    classes = metrics.get("classes") if isinstance(metrics.get("classes"), list) else None
    if isinstance(ap, list) and classes and len(ap) == len(classes):
        ap = dict(zip(map(str, classes), ap))
    if table is None:
        if isinstance(ap, Mapping) and ap:
            return "<h3>Per-class AP</h3>" + _table(["class", "AP"], sorted(ap.items()))
        return ""
    header, rows = table
    if isinstance(ap, Mapping) and ap and not any(h.lower() in ("ap", "average_precision") for h in header):
        header = [*header, "AP"]
        rows = [[*row, ap.get(str(row[0]), None) if row else None] for row in rows]
    return "<h3>Per class</h3>" + _table(header, rows)


def evaluation_section(eval_dir: str | os.PathLike[str], *, gallery: int = DEFAULT_GALLERY,
                       thumbnails: bool = True) -> str:
    """The evaluation section (HTML) for a ``falv evaluate`` output folder; ``gallery``
    mistakes and as many correct predictions are shown with their frames (0: none)."""
    eval_dir = Path(eval_dir)
    metrics = _read_json(eval_dir / "metrics.json", "pass the --out folder of `falv evaluate`")
    if not isinstance(metrics, Mapping):
        raise ReportError(f"{eval_dir / 'metrics.json'}: expected a JSON object")
    out = ['<section id="evaluation"><h2>Evaluation</h2>',
           f'<p class="note">Source: <code>{_e(eval_dir)}</code></p>']
    rows = [(name, metrics[key]) for key, name in _METRIC_ROWS if key in metrics and metrics[key] is not None]
    failed = metrics.get("failed") if isinstance(metrics.get("failed"), list) else []
    failed_count = len(failed) if failed or _number(metrics.get("failed")) is None else metrics["failed"]
    rows.append(("failed videos", failed_count))
    classes = metrics.get("classes")
    if isinstance(classes, list):
        rows.append(("classes", len(classes)))
    extra = [(k, v) for k, v in metrics.items() if k not in _SHOWN_KEYS and isinstance(v, (int, float, str))]
    out.append("<h3>Metrics</h3>" + _table(["metric", "value"], rows + extra))
    loc = metrics.get("localization")
    if isinstance(loc, Mapping) and loc:
        out.append("<h3>Temporal localisation</h3>" + _table(list(map(str, loc.keys())), [list(loc.values())]))
    views = metrics.get("views")
    if isinstance(views, list) and views:
        out.append("<h3>Views</h3>" + _views_table(views))
    out.append(_robustness_html(eval_dir, metrics.get("robustness")))
    picture = _image_file_uri(eval_dir / "confusion_matrix.png")
    if picture:
        out.append(f'<h3>Confusion matrix</h3><img class="plot" src="{picture}" alt="confusion matrix">')
    elif (eval_dir / "confusion_matrix.csv").exists():
        out.append("<h3>Confusion matrix</h3>" + _confusion_table(eval_dir / "confusion_matrix.csv"))
    out.append(_per_class_table(eval_dir, metrics))
    if failed:
        rows = [(f.get("path", ""), f.get("error", "")) if isinstance(f, Mapping) else (f, "") for f in failed]
        out.append(f"<h3>Failed videos ({len(failed)})</h3>" + _table(["path", "error"], rows, numeric=False))
    out.append(gallery_html(eval_dir, gallery, thumbnails))
    if isinstance(classes, list) and classes:
        out.append(f"<details><summary>{len(classes)} classes</summary><p>{_e(', '.join(map(str, classes)))}</p>"
                   "</details>")
    out.append("</section>")
    return "".join(out)


def _robustness_html(eval_dir: Path, robustness: Any) -> str:
    """The robustness block of ``falv evaluate --perturb``: a table and its picture."""
    if not isinstance(robustness, Mapping) or not isinstance(robustness.get("perturbations"), list):
        return ""
    metric = str(robustness.get("metric", "top1"))
    clean = robustness.get("clean") if isinstance(robustness.get("clean"), Mapping) else {}
    rows = [("clean", clean.get(metric), None, None)]
    rows += [(r.get("spec"), r.get(metric), r.get("drop"), r.get("kept"))
             for r in robustness["perturbations"] if isinstance(r, Mapping)]
    html = (f"<h3>Robustness</h3><p class=\"note\">The test videos perturbed (seed {_e(robustness.get('seed'))}); "
            "kept: the perturbed value as a share of the clean one.</p>"
            + _table(["perturbation", metric, "drop", "kept"], rows))
    picture = _image_file_uri(eval_dir / "robustness.png")
    if picture:
        html += f'<img class="plot" src="{picture}" alt="robustness">'
    return html


def _views_table(views: list[Any]) -> str:
    if all(isinstance(v, Mapping) for v in views):
        keys = list(dict.fromkeys(k for v in views for k in v))
        return _table(keys, [[_cell(v.get(k)) for k in keys] for v in views])
    return _table(["view"], [[_cell(v)] for v in views])


def _cell(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return value


# -- training -------------------------------------------------------------------------------------

_PLOT_ORDER = ("loss", "accuracy", "lr")
_EPOCH_COLUMNS = ("epoch", "step", "train_loss", "train_top1", "val_loss", "val_top1", "val_map", "lr", "time")


def training_section(run_dir: str | os.PathLike[str]) -> str:
    """The training section (HTML) for a run folder: summary, epoch table, curves, configuration."""
    from falv.report.plots import LOG_NAME, load_training_log, plot_training

    run_dir = Path(run_dir)
    log_path = run_dir / LOG_NAME
    plots = sorted((run_dir / "plots").glob("*.png"), key=lambda p: (
        _PLOT_ORDER.index(p.stem) if p.stem in _PLOT_ORDER else len(_PLOT_ORDER), p.name))
    if not plots and not log_path.is_file():
        raise ReportError(f"{run_dir}: no {LOG_NAME} and no plots/*.png here; pass a training run folder")
    out = ['<section id="training"><h2>Training</h2>', f'<p class="note">Source: <code>{_e(run_dir)}</code></p>']
    if log_path.is_file():
        run = load_training_log(log_path)
        if run.end is not None:
            end = run.end
            bits = [f"best epoch {_fmt(end.get('best_epoch'))}"]
            if end.get("best_metric") is not None:
                bits.append(f"{end.get('best_metric')} = {_fmt(end.get('best_value'))}")
            if _number(end.get("time")) is not None:
                bits.append(f"{_seconds(float(end['time']))} in all")
            out.append(f"<p>{_e(', '.join(bits))}</p>")
        if run.epochs:
            out.append("<h3>Epochs</h3>" + _table(_EPOCH_COLUMNS, [[r.get(c) for c in _EPOCH_COLUMNS]
                                                                    for r in run.epochs]))
    uris = []
    if plots:
        uris = [(p.stem, _image_file_uri(p)) for p in plots]
    else:
        with tempfile.TemporaryDirectory(prefix="falv-report-") as tmp:
            drawn = plot_training(log_path, tmp)
            uris = [(name, _image_file_uri(path)) for name, path in drawn.items()]
    uris = [(name, uri) for name, uri in uris if uri]
    if uris:
        out.append('<h3>Training curves</h3><div class="plots">'
                   + "".join(f'<img class="plot" src="{uri}" alt="{_e(name)}">' for name, uri in uris) + "</div>")
    out.append(_split_distribution(run_dir))
    config_path = run_dir / "train_config.json"
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            out.append(f'<p class="error">{_e(config_path)}: cannot read ({_e(exc)})</p>')
        else:
            if isinstance(config, Mapping):
                rows = [(k, _cell(v)) for k, v in config.items()]
                out.append("<details><summary>training configuration</summary>"
                           + _table(["key", "value"], rows, numeric=False) + "</details>")
    if (run_dir / "best").is_dir():
        out.append(f'<p class="note">best model: <code>{_e(run_dir / "best")}</code></p>')
    out.append("</section>")
    return "".join(out)


# -- datasets: class distribution -----------------------------------------------------------------

#: Colours of the splits in the class distribution chart.
_SPLIT_COLOURS = {"train": "#1f77b4", "val": "#ff7f0e", "test": "#2ca02c", "all": "#7f7f7f"}


def class_counts(source: Any) -> Counter:
    """Videos per class of a dataset source (a multi-label video counts once for each of its labels)."""
    counts: Counter = Counter({c: 0 for c in source.classes})
    for entry in source.entries:
        counts.update(entry.labels)
    return counts


def class_distribution_svg(counts: Mapping[str, Mapping[str, int]]) -> str:
    """An inline SVG: one row per class, a bar per split (``{split: {class: videos}}``)."""
    classes = list(dict.fromkeys(c for per in counts.values() for c in per))
    splits = list(counts)
    if not classes or not splits:
        return ""
    top = max([1] + [n for per in counts.values() for n in per.values()])
    label_w, bar_w, bar_h, gap = 220, 560, 9, 6
    row_h = bar_h * len(splits) + gap
    height = row_h * len(classes) + 4
    width = label_w + bar_w + 60
    parts = [f'<svg class="distribution" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="videos per class and split" width="{width}">']
    for i, name in enumerate(classes):
        y0 = i * row_h + 2
        parts.append(f'<text x="{label_w - 6}" y="{y0 + row_h / 2 + 2:.1f}" font-size="11" text-anchor="end" '
                     f'fill="#37474f">{_e(name if len(name) <= 34 else name[:33] + "...")}</text>')
        for k, split in enumerate(splits):
            n = int(counts[split].get(name, 0))
            y = y0 + k * bar_h
            w = n / top * bar_w
            colour = _SPLIT_COLOURS.get(split, _PALETTE[k % len(_PALETTE)])
            parts.append(f'<rect x="{label_w}" y="{y}" width="{max(w, 0.5):.1f}" height="{bar_h - 1}" '
                         f'fill="{colour}"><title>{_e(f"{name}, {split}: {n} videos")}</title></rect>'
                         f'<text x="{label_w + w + 4:.1f}" y="{y + bar_h - 1.5}" font-size="9" '
                         f'fill="#607d8b">{n}</text>')
    parts.append("</svg>")
    return "".join(parts)


def distribution_html(counts: Mapping[str, Mapping[str, int]]) -> str:
    """The chart, its legend and the table of counts (with totals) for ``{split: {class: videos}}``."""
    splits = list(counts)
    classes = list(dict.fromkeys(c for per in counts.values() for c in per))
    legend = _legend({s: _SPLIT_COLOURS.get(s, _PALETTE[k % len(_PALETTE)]) for k, s in enumerate(splits)},
                     {s: sum(counts[s].values()) for s in splits})
    rows = [[c, *(counts[s].get(c, 0) for s in splits)] for c in classes]
    rows.append(["total", *(sum(counts[s].values()) for s in splits)])
    empty = [c for c in classes if any(counts[s].get(c, 0) == 0 for s in splits)]
    warning = (f'<p class="error">classes without videos in some split: {_e(", ".join(empty[:20]))}'
               f'{" ..." if len(empty) > 20 else ""}</p>') if empty else ""
    return (legend + class_distribution_svg(counts) + warning
            + f"<details><summary>videos per class and split</summary>{_table(['class', *splits], rows)}</details>")


def dataset_section(data: str | os.PathLike[str], splits: Sequence[str] = ("train", "val", "test")) -> str:
    """The dataset section (HTML): videos per class in every split ``data`` has (any source
    :func:`falv.data.sources.load_source` reads; all of it as ``all`` when it has no splits)."""
    from falv.data.sources import load_source
    from falv.errors import FalvError

    counts: dict[str, Counter] = {}
    seen: dict[str, tuple] = {}
    for split in splits:
        try:
            source = load_source(str(data), split=split)
        except FalvError:
            continue  # the layout has no such split
        counts[split] = class_counts(source)
        seen[split] = tuple(e.path for e in source.entries)
    if len(set(seen.values())) < len(seen):  # a layout without splits ignores split=: the same videos each time
        counts = {}
    if not counts:
        try:
            counts["all"] = class_counts(load_source(str(data)))
        except FalvError as exc:
            raise ReportError(f"cannot read the dataset {data}: {exc}") from exc
    out = ['<section id="dataset"><h2>Dataset</h2>', f'<p class="note">Source: <code>{_e(data)}</code>; '
           f'{_e(", ".join(f"{s}: {sum(c.values())} videos" for s, c in counts.items()))}</p>',
           "<h3>Class distribution</h3>", distribution_html(counts)]
    out.append("</section>")
    return "".join(out)


def _split_distribution(run_dir: Path) -> str:
    """The class distribution of a training run's train and validation sets (its split.json)."""
    try:
        split = json.loads((run_dir / "split.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return ""
    counts: dict[str, Counter] = {}
    for name in ("train", "val"):
        part = split.get(name) if isinstance(split, Mapping) else None
        if not isinstance(part, Mapping) or not isinstance(part.get("entries"), list):
            continue
        counter: Counter = Counter({str(c): 0 for c in part.get("classes") or []})
        for entry in part["entries"]:
            if isinstance(entry, Mapping):
                counter.update(str(x) for x in entry.get("labels") or [])
        counts[name] = counter
    return "<h3>Class distribution</h3>" + distribution_html(counts) if counts else ""


# -- evaluation: a gallery of sample predictions ---------------------------------------------------



def _read_predictions(path: Path) -> list[Mapping[str, Any]]:
    lines = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(item, Mapping) and isinstance(item.get("labels"), list) and item["labels"]:
            lines.append(item)
    return lines


def pick_gallery(predictions: Sequence[Mapping[str, Any]], per_kind: int) -> tuple[list[Any], list[Any]]:
    """(mistakes, correct): the ``per_kind`` most confident of each, highest top score first,
    ties by path (a deterministic choice)."""
    def top_score(p: Mapping[str, Any]) -> float:
        return float(_number(p["labels"][0].get("score")) or 0.0)

    ranked = sorted(predictions, key=lambda p: (-top_score(p), str(p.get("path"))))
    mistakes = [p for p in ranked if p.get("correct") is False][:per_kind]
    correct = [p for p in ranked if p.get("correct") is True][:per_kind]
    return mistakes, correct


def _gallery_card(item: Mapping[str, Any], base: Path, thumbnails: bool, colours: Mapping[str, str]) -> str:
    path = str(item.get("path", ""))
    name = Path(path).name or path
    uri = None
    if thumbnails:
        video = _resolve_video(path, base)
        try:
            from falv.video.metadata import probe

            duration = probe(str(video)).duration
        except Exception:  # noqa: BLE001 - no duration: one frame at the start
            duration = None
        uri = frames_uri(video, strip_times(duration, GALLERY_FRAMES))
    thumb = (f'<img class="strip" src="{uri}" alt="{_e(name)}">' if uri
             else '<div class="thumb placeholder">no preview</div>')
    truth = item.get("target", item.get("targets"))
    truth_text = ", ".join(map(str, truth)) if isinstance(truth, list) else str(truth)
    ok = item.get("correct") is True
    body = [f'<div class="name" title="{_e(path)}">{"&#10003;" if ok else "&#10007;"} {_e(name)}</div>',
            f'<div class="meta">true class: <b>{_e(truth_text)}</b></div>']
    for ls in item["labels"][:3]:
        score = _number(ls.get("score")) or 0.0
        label = str(ls.get("label"))
        pct = max(0.0, min(1.0, score)) * 100
        body.append(f'<div class="lbl"><span class="bar" style="width:{pct * 1.2:.0f}px;'
                    f'background:{colours.get(label, "#90a4ae")}"></span>'
                    f'<span class="txt">{_e(label)} <span class="note">{score:.3f}</span></span></div>')
    css = "card" if ok else "card failed"
    return f'<div class="{css}">{thumb}<div class="body">{"".join(body)}</div></div>'


def gallery_html(eval_dir: Path, per_kind: int = DEFAULT_GALLERY, thumbnails: bool = True) -> str:
    """Sample predictions of an evaluation (right and wrong, with frames), or "" without
    ``predictions.jsonl``."""
    predictions = _read_predictions(eval_dir / "predictions.jsonl")
    if not predictions or per_kind <= 0:
        return ""
    mistakes, correct = pick_gallery(predictions, per_kind)
    colours = label_colours(str(ls.get("label")) for p in predictions for ls in p["labels"][:1])
    wrong_total = sum(1 for p in predictions if p.get("correct") is False)
    right_total = sum(1 for p in predictions if p.get("correct") is True)
    out = [f'<h3>Sample predictions</h3><p class="note">The most confident of {wrong_total} mistakes and '
           f'{right_total} correct predictions; frames at the centres of {GALLERY_FRAMES} equal parts of each video.</p>']
    for title, items in ((f"Mistakes ({len(mistakes)} of {wrong_total})", mistakes),
                         (f"Correct ({len(correct)} of {right_total})", correct)):
        if items:
            out.append(f"<h4>{_e(title)}</h4><div class=\"cards\">"
                       + "".join(_gallery_card(i, eval_dir, thumbnails, colours) for i in items) + "</div>")
    return "".join(out)


# -- the page -------------------------------------------------------------------------------------


def build_report(
    *,
    labels_dir: str | os.PathLike[str] | None = None,
    eval_dir: str | os.PathLike[str] | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    data: str | os.PathLike[str] | None = None,
    title: str | None = None,
    max_videos: int | None = DEFAULT_MAX_VIDEOS,
    thumbnails: bool = True,
    gallery: int = DEFAULT_GALLERY,
) -> str:
    """The report as one HTML string (see the module docstring for its sections)."""
    from falv import __version__

    if labels_dir is None and eval_dir is None and run_dir is None and data is None:
        raise ReportError("nothing to report: give a labels folder, an evaluation folder, a training run "
                          "or a dataset")
    sections, nav = [], []
    if labels_dir is not None:
        sections.append(labels_section(labels_dir, max_videos=max_videos, thumbnails=thumbnails))
        nav.append(("labels", "Labels"))
    if eval_dir is not None:
        sections.append(evaluation_section(eval_dir, gallery=gallery, thumbnails=thumbnails))
        nav.append(("evaluation", "Evaluation"))
    if run_dir is not None:
        sections.append(training_section(run_dir))
        nav.append(("training", "Training"))
    if data is not None:
        sections.append(dataset_section(data))
        nav.append(("dataset", "Dataset"))
    title = title or "falv report"
    stamp = time.strftime("%Y-%m-%d %H:%M")
    links = "".join(f'<a href="#{anchor}">{_e(name)}</a>' for anchor, name in nav)
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f'<header><h1>{_e(title)}</h1><div class="sub">{_e(f"generated {stamp} by falv {__version__}")}</div>'
        f"</header><nav>{links}</nav><main>{''.join(sections)}</main></body></html>\n"
    )


def write_report(
    out_html: str | os.PathLike[str],
    *,
    labels_dir: str | os.PathLike[str] | None = None,
    eval_dir: str | os.PathLike[str] | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    data: str | os.PathLike[str] | None = None,
    title: str | None = None,
    max_videos: int | None = DEFAULT_MAX_VIDEOS,
    thumbnails: bool = True,
    gallery: int = DEFAULT_GALLERY,
) -> Path:
    """Write one self-contained HTML report (atomically) and return its path.

    ``labels_dir``: a ``falv label`` output folder (or its ``labels.jsonl``);
    ``eval_dir``: a ``falv evaluate`` output folder; ``run_dir``: a training run
    folder; ``data``: a dataset source (its class distribution). At least one is
    needed. ``max_videos`` bounds the video cards (and thumbnails decoded);
    ``gallery`` the evaluation's sample predictions of each kind; ``thumbnails=False``
    decodes nothing.
    """
    from falv.hub.io import atomic_write_text

    text = build_report(labels_dir=labels_dir, eval_dir=eval_dir, run_dir=run_dir, data=data, title=title,
                        max_videos=max_videos, thumbnails=thumbnails, gallery=gallery)
    path = Path(out_html)
    atomic_write_text(path, text)
    return path
