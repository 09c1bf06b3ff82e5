"""Number formatting, HTML pieces and inline SVG charts for the report.

Everything here is plain Python on small, already-aggregated values (a few dozen
points at most): the report must open offline, with no server, CDN or script library,
so every chart is an ``<svg>`` drawn here. Each chart has a title, axis labels with
units, and a ``<title>`` element for screen readers.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from cvo_spark.segments.rules import QUADRANT_INCUBATOR, QUADRANT_RISK, QUADRANT_SNIPER, QUADRANT_STAR

#: Colours that stay distinct for the common kinds of colour blindness (Okabe-Ito).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")

NA = "–"


# --------------------------------------------------------------------------- formatting
def _finite(value) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def fmt_int(value) -> str:
    """``1234567`` -> ``1,234,567``; None -> an en dash."""
    return f"{int(round(value)):,}" if _finite(value) else NA


def fmt_money(value, currency: str = "Rp") -> str:
    """Whole currency units with thousands separators: ``Rp 1,234,567`` (``-Rp 5,000``)."""
    if not _finite(value):
        return NA
    amount = int(round(value))
    sign = "-" if amount < 0 else ""
    return f"{sign}{currency} {abs(amount):,}"


def fmt_pct(value, digits: int = 1) -> str:
    """A fraction as a percentage: ``0.125`` -> ``12.5%``."""
    return f"{value * 100:,.{digits}f}%" if _finite(value) else NA


def fmt_pp(value, digits: int = 1) -> str:
    """A difference of two rates in percentage points, signed: ``0.021`` -> ``+2.1 pp``."""
    return f"{value * 100:+,.{digits}f} pp" if _finite(value) else NA


def fmt_num(value, digits: int = 2) -> str:
    """A plain number with separators and fixed decimals: ``1234.5`` -> ``1,234.50``."""
    return f"{value:,.{digits}f}" if _finite(value) else NA


def esc(text) -> str:
    return html.escape("" if text is None else str(text), quote=True)


# --------------------------------------------------------------------------- HTML pieces
def html_table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """A table of already-formatted cells (escaped here); columns in `numeric` align right."""
    num = set(numeric)
    head = "".join(f'<th class="{"num" if i in num else ""}">{esc(h)}</th>' for i, h in enumerate(headers))
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"num" if i in num else ""}">{esc(c)}</td>' for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


#: A table column: (header, dict key or function of the row, formatter or None for text).
Column = tuple[str, "str | Callable[[dict], Any]", "Callable[[Any], str] | None"]


def records_table(rows: Sequence[dict], columns: Sequence[Column]) -> str:
    """A table of dict rows; columns with a formatter are numeric (right-aligned)."""
    cells = []
    for r in rows:
        line = []
        for _, key, fmt in columns:
            value = key(r) if callable(key) else r.get(key)
            line.append(fmt(value) if fmt else ("" if value is None else str(value)))
        cells.append(line)
    numeric = [i for i, (_, _, fmt) in enumerate(columns) if fmt is not None]
    return html_table([c[0] for c in columns], cells, numeric=numeric)


def kpi_cards(items: Sequence[tuple[str, str, str]]) -> str:
    """Headline figures as cards: (label, formatted value, one-line note)."""
    cards = "".join(
        f'<div class="kpi"><div class="kpi-label">{esc(label)}</div>'
        f'<div class="kpi-value">{esc(value)}</div><div class="kpi-note">{esc(note)}</div></div>'
        for label, value, note in items
    )
    return f'<div class="kpis">{cards}</div>'


def _wrap(label: str, width: int = 16) -> list[str]:
    """A category label on at most two lines of `width` characters (words kept whole where
    they fit; the rest cut with an ellipsis): "Traditional Active" stays readable under its bar."""
    lines: list[str] = []
    for word in label.split(" "):
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        elif len(lines) < 2:
            lines.append(word)
        else:
            lines[-1] += " " + word
    return [line if len(line) <= width else line[: width - 1] + "…" for line in lines]


def _text(x: float, y: float, text, cls: str, anchor: str = "middle") -> str:
    """One SVG text element (escaped), positioned to 0.1 px."""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" class="{cls}">{esc(text)}</text>'


# --------------------------------------------------------------------------- axes
def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2, 2.5 or 5 times a power of ten apart)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 10))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 10))
    return ticks


def short_number(value: float) -> str:
    """Axis-tick text: 1,500,000 -> 1.5M, 2,000 -> 2k, 0.25 -> 0.25."""
    a = abs(value)
    if a >= 1e9:
        return f"{value / 1e9:g}B"
    if a >= 1e6:
        return f"{value / 1e6:g}M"
    if a >= 1e4:
        return f"{value / 1e3:g}k"
    return f"{value:,.6g}" if a >= 1 or a == 0 else f"{value:.3g}"


class _Frame:
    """Plot area geometry and the data->pixel mapping of one chart."""

    def __init__(self, width, height, x_range, y_range, left=70, right=20, top=40, bottom=55):
        self.w, self.h = width, height
        self.left, self.right, self.top, self.bottom = left, right, top, bottom
        self.x0, self.x1 = x_range
        self.y0, self.y1 = y_range

    def px(self, x: float) -> float:
        span = (self.x1 - self.x0) or 1.0
        return self.left + (x - self.x0) / span * (self.w - self.left - self.right)

    def py(self, y: float) -> float:
        span = (self.y1 - self.y0) or 1.0
        return self.h - self.bottom - (y - self.y0) / span * (self.h - self.top - self.bottom)


def _svg_open(width: int, height: int, title: str) -> str:
    return (
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}"><title>{esc(title)}</title>'
        f'<text x="{width / 2:.1f}" y="20" text-anchor="middle" class="chart-title">{esc(title)}</text>'
    )


def _axes(fr: _Frame, xticks, yticks, x_label, y_label, xfmt, yfmt, x_categories=None) -> str:
    out = []
    for t in yticks:
        y = fr.py(t)
        out.append(f'<line x1="{fr.left}" x2="{fr.w - fr.right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(_text(fr.left - 6, y + 4, yfmt(t), "tick", anchor="end"))
    if x_categories is None:
        for t in xticks:
            x = fr.px(t)
            out.append(_text(x, fr.h - fr.bottom + 16, xfmt(t), "tick"))
    base = fr.py(max(fr.y0, min(0.0, fr.y1))) if fr.y0 <= 0 <= fr.y1 else fr.h - fr.bottom
    out.append(f'<line x1="{fr.left}" x2="{fr.w - fr.right}" y1="{base:.1f}" y2="{base:.1f}" class="axis"/>')
    out.append(f'<line x1="{fr.left}" x2="{fr.left}" y1="{fr.top}" y2="{fr.h - fr.bottom}" class="axis"/>')
    mid_x = (fr.left + fr.w - fr.right) / 2
    out.append(_text(mid_x, fr.h - 12, x_label, "axis-label"))
    mid_y = (fr.top + fr.h - fr.bottom) / 2
    out.append(
        f'<text x="16" y="{mid_y:.1f}" text-anchor="middle" class="axis-label" '
        f'transform="rotate(-90 16 {mid_y:.1f})">{esc(y_label)}</text>'
    )
    return "".join(out)


def _legend(names: Sequence[str], width: int, top: int = 30) -> str:
    out, x = [], 80
    for i, name in enumerate(names):
        colour = PALETTE[i % len(PALETTE)]
        out.append(f'<rect x="{x}" y="{top}" width="10" height="10" fill="{colour}"/>')
        out.append(f'<text x="{x + 14}" y="{top + 9}" class="tick">{esc(name)}</text>')
        x += 24 + 7 * len(name)
    return "".join(out)


# --------------------------------------------------------------------------- charts
def line_chart(
    series: dict[str, Sequence[tuple[float, float]]],
    title: str,
    x_label: str,
    y_label: str,
    *,
    width: int = 520,
    height: int = 320,
    xfmt: Callable[[float], str] = short_number,
    yfmt: Callable[[float], str] = short_number,
    dashed: Sequence[str] = (),
    highlight_x: float | None = None,
    y_from_zero: bool = False,
    integer_x: bool = False,
) -> str:
    """Lines with markers, one per series; `dashed` series are references (e.g. equality).

    `integer_x` keeps only whole-number x ticks (k in a k-selection chart is a count).
    """
    points = [p for pts in series.values() for p in pts if _finite(p[0]) and _finite(p[1])]
    if not points:
        return empty_chart(title, width, height)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    xt = nice_ticks(min(xs), max(xs))
    if integer_x:
        xt = (
            list(range(math.floor(min(xs)), math.ceil(max(xs)) + 1))
            if max(xs) > min(xs)
            else [min(xs) - 1, min(xs) + 1]
        )
    yt = nice_ticks(0.0 if y_from_zero else min(ys), max(ys))
    fr = _Frame(width, height, (xt[0], xt[-1]), (yt[0], yt[-1]), top=48 if len(series) > 1 else 40)
    out = [_svg_open(width, height, title), _axes(fr, xt, yt, x_label, y_label, xfmt, yfmt)]
    if highlight_x is not None and _finite(highlight_x):
        hx = fr.px(highlight_x)
        out.append(
            f'<line x1="{hx:.1f}" x2="{hx:.1f}" y1="{fr.top}" y2="{fr.h - fr.bottom}" class="highlight"/>'
        )
    for i, (name, pts) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        good = [(x, y) for x, y in pts if _finite(x) and _finite(y)]
        path = " ".join(f"{fr.px(x):.1f},{fr.py(y):.1f}" for x, y in sorted(good))
        dash = ' stroke-dasharray="5,4"' if name in dashed else ""
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        if name not in dashed and len(good) <= 40:
            out.extend(
                f'<circle cx="{fr.px(x):.1f}" cy="{fr.py(y):.1f}" r="3" fill="{colour}"/>' for x, y in good
            )
    if len(series) > 1:
        out.append(_legend(list(series), width))
    out.append("</svg>")
    return "".join(out)


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    title: str,
    x_label: str,
    y_label: str,
    *,
    width: int = 520,
    height: int = 320,
    yfmt: Callable[[float], str] = short_number,
    value_fmt: Callable[[float], str] | None = None,
) -> str:
    """Vertical bars, one per category, with the value printed above each bar."""
    pairs = [(str(lab), float(v)) for lab, v in zip(labels, values, strict=False) if _finite(v)]
    if not pairs:
        return empty_chart(title, width, height)
    vals = [v for _, v in pairs]
    yt = nice_ticks(min(0.0, min(vals)), max(0.0, max(vals)))
    fr = _Frame(width, height, (0, len(pairs)), (yt[0], yt[-1]))
    out = [_svg_open(width, height, title), _axes(fr, [], yt, x_label, y_label, str, yfmt, x_categories=True)]
    slot = fr.px(1) - fr.px(0)
    for i, (label, v) in enumerate(pairs):
        x = fr.px(i) + slot * 0.15
        top, zero = fr.py(max(v, 0.0)), fr.py(min(v, 0.0))
        colour = PALETTE[i % len(PALETTE)]
        out.append(
            f'<rect x="{x:.1f}" y="{top:.1f}" width="{slot * 0.7:.1f}" height="{max(zero - top, 0.5):.1f}" '
            f'fill="{colour}"><title>{esc(label)}: {esc((value_fmt or yfmt)(v))}</title></rect>'
        )
        cx = fr.px(i) + slot / 2
        out.extend(
            _text(cx, fr.h - fr.bottom + 16 + 12 * n, line, "tick") for n, line in enumerate(_wrap(label))
        )
        if value_fmt is not None:
            out.append(_text(cx, top - 4, value_fmt(v), "value"))
    out.append("</svg>")
    return "".join(out)


def interval_chart(
    labels: Sequence[str],
    estimates: Sequence[float],
    lows: Sequence[float],
    highs: Sequence[float],
    title: str,
    x_label: str,
    y_label: str,
    *,
    width: int = 640,
    xfmt: Callable[[float], str] = short_number,
) -> str:
    """A forest plot: one row per label, a dot at the estimate and a bar over its interval.

    A vertical line marks zero, so an interval that crosses it reads as "no effect shown".
    """
    rows = [
        (str(lab), e, lo if _finite(lo) else e, hi if _finite(hi) else e)
        for lab, e, lo, hi in zip(labels, estimates, lows, highs, strict=False)
        if _finite(e)
    ]
    height = 110 + 26 * max(len(rows), 1)
    if not rows:
        return empty_chart(title, width, height)
    lo_all = min(min(r[2] for r in rows), 0.0)
    hi_all = max(max(r[3] for r in rows), 0.0)
    xt = nice_ticks(lo_all, hi_all)
    fr = _Frame(width, height, (xt[0], xt[-1]), (0, len(rows)), left=230, bottom=50)
    out = [_svg_open(width, height, title)]
    for t in xt:
        x = fr.px(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{fr.top}" y2="{height - fr.bottom}" class="grid"/>')
        out.append(_text(x, height - fr.bottom + 16, xfmt(t), "tick"))
    zx = fr.px(0.0)
    out.append(f'<line x1="{zx:.1f}" x2="{zx:.1f}" y1="{fr.top}" y2="{height - fr.bottom}" class="axis"/>')
    for i, (label, est, lo, hi) in enumerate(rows):
        y = fr.top + 13 + 26 * i
        colour = PALETTE[0] if lo > 0 else (PALETTE[3] if hi < 0 else "#777777")
        text = label if len(label) <= 30 else label[:29] + "…"
        out.append(_text(fr.left - 8, y + 4, text, "tick", anchor="end"))
        out.append(
            f'<line x1="{fr.px(lo):.1f}" x2="{fr.px(hi):.1f}" y1="{y}" y2="{y}" '
            f'stroke="{colour}" stroke-width="3"/>'
        )
        out.append(f'<circle cx="{fr.px(est):.1f}" cy="{y}" r="4.5" fill="{colour}"/>')
    out.append(_text((fr.left + width - fr.right) / 2, height - 12, x_label, "axis-label"))
    mid_y = (fr.top + height - fr.bottom) / 2
    out.append(
        f'<text x="14" y="{mid_y:.1f}" text-anchor="middle" class="axis-label" '
        f'transform="rotate(-90 14 {mid_y:.1f})">{esc(y_label)}</text>'
    )
    out.append("</svg>")
    return "".join(out)


#: (revenue high?, usage high?) of each strategic-matrix quadrant, as `segments.rules.quadrant`
#: classifies it.
QUADRANT_LEVELS: dict[str, tuple[bool, bool]] = {
    QUADRANT_STAR: (True, True),
    QUADRANT_RISK: (True, False),
    QUADRANT_SNIPER: (False, True),
    QUADRANT_INCUBATOR: (False, False),
}


def quadrant_cell(name: str) -> tuple[int, int]:
    """(column, row) of a quadrant in the 2x2 chart: column 1 = high usage, row 0 = high revenue."""
    high_revenue, high_usage = QUADRANT_LEVELS[name]
    return (1 if high_usage else 0, 0 if high_revenue else 1)


def quadrant_chart(
    cells: dict[str, tuple[str, str]],
    title: str,
    x_label: str,
    y_label: str,
    *,
    width: int = 520,
    height: int = 360,
) -> str:
    """A 2x2 strategic matrix. `cells` maps a quadrant name to (headline, detail) text.

    Layout (y up = more revenue, x right = more usage), the cells of `segments.rules.quadrant`:
    top-right Star (high revenue, high usage), top-left Risk Area (high revenue, low usage),
    bottom-right Sniper Zone (low revenue, high usage), bottom-left Incubator (low on both).
    """
    positions = {name: quadrant_cell(name) for name in QUADRANT_LEVELS}
    fills = {"Star": "#d9f0e3", "Sniper Zone": "#fdf0d5", "Risk Area": "#fbe0d6", "Incubator": "#dcebf7"}
    left, top, right, bottom = 70, 40, 20, 55
    cw, ch = (width - left - right) / 2, (height - top - bottom) / 2
    out = [_svg_open(width, height, title)]
    for name, (col, row) in positions.items():
        x, y = left + col * cw, top + row * ch
        head, detail = cells.get(name, ("–", ""))
        out.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{cw:.1f}" height="{ch:.1f}" fill="{fills[name]}" '
            f'stroke="#ffffff" stroke-width="3"/>'
        )
        out.append(_text(x + cw / 2, y + 28, name, "quad-name"))
        out.append(_text(x + cw / 2, y + 56, head, "quad-head"))
        out.append(_text(x + cw / 2, y + 80, detail, "tick"))
    out.append(_text(left + cw, height - 20, x_label, "axis-label"))
    mid_y = top + ch
    out.append(
        f'<text x="24" y="{mid_y:.1f}" text-anchor="middle" class="axis-label" '
        f'transform="rotate(-90 24 {mid_y:.1f})">{esc(y_label)}</text>'
    )
    out.append("</svg>")
    return "".join(out)


def empty_chart(title: str, width: int = 520, height: int = 120) -> str:
    """A titled placeholder when a chart has no points to draw (still a visible element)."""
    return (
        _svg_open(width, height, title)
        + f'<text x="{width / 2:.1f}" y="{height / 2 + 10:.1f}" text-anchor="middle" class="tick">'
        "no data points to draw</text></svg>"
    )


# --------------------------------------------------------------------------- page
CSS = """
body{font-family:"DejaVu Sans",Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#12355b;color:#fff;padding:22px 36px}
header h1{margin:0 0 4px;font-size:26px} header p{margin:0;opacity:.85}
nav{padding:8px 36px;background:#e8edf3;font-size:13px} nav a{margin-right:14px;color:#12355b}
main{padding:8px 36px 40px;max-width:1280px}
section{background:#fff;border-radius:8px;padding:16px 22px;margin:18px 0;
  box-shadow:0 1px 3px rgba(0,0,0,.08)}
h2{font-size:20px;margin:4px 0 10px;color:#12355b} h3{font-size:16px;margin:14px 0 6px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{padding:5px 10px;border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:top}
th{background:#f0f3f7} td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.kpis{display:flex;flex-wrap:wrap;gap:12px}
.kpi{flex:1 1 180px;background:#f0f5fb;border-radius:6px;padding:10px 14px}
.kpi-label{font-size:12px;color:#4a5568;text-transform:uppercase;letter-spacing:.04em}
.kpi-value{font-size:24px;font-weight:bold;margin:4px 0} .kpi-note{font-size:12px;color:#4a5568}
.charts{display:flex;flex-wrap:wrap;gap:16px}
svg.chart{background:#fff;border:1px solid #e3e6ea;border-radius:6px}
.chart-title{font-size:14px;font-weight:bold} .tick{font-size:11px;fill:#333} .value{font-size:11px;fill:#111}
.axis-label{font-size:12px;fill:#333} .grid{stroke:#eceff3} .axis{stroke:#555}
.highlight{stroke:#D55E00;stroke-dasharray:3,3}
.quad-name{font-size:15px;font-weight:bold} .quad-head{font-size:18px}
.na{color:#8a5a00;background:#fff7e6;border-left:4px solid #e69f00;padding:8px 12px}
.warn{color:#8a1c00;font-weight:bold} .ok{color:#006b3c} .note{font-size:13px;color:#4a5568}
footer{font-size:12px;color:#4a5568;padding:0 36px 30px}
"""

#: Counts the charts that actually rendered and records script errors on <html>, so a
#: headless browser test (and a curious reader) can check the page is whole.
RENDER_CHECK_JS = """
window.__cvoErrors = [];
window.onerror = function (msg) { window.__cvoErrors.push(String(msg)); mark(); };
function mark() {
  var n = 0;
  document.querySelectorAll('svg.chart').forEach(function (s) {
    var b = s.getBoundingClientRect(); if (b.width > 0 && b.height > 0 && s.childElementCount > 1) n++; });
  document.querySelectorAll('img').forEach(function (i) { if (i.complete && i.naturalWidth > 0) n++; });
  var root = document.documentElement;
  root.setAttribute('data-charts-rendered', String(n));
  root.setAttribute('data-script-errors', String(window.__cvoErrors.length));
  root.setAttribute('data-errors-text', window.__cvoErrors.join(' | '));
}
window.addEventListener('load', mark);
"""
