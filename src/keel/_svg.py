"""The HTML report's charts, written as inline SVG text: no plotting library, nothing fetched.

Every chart is an `<svg class="chart">` whose data marks (bars, points, lines) sit in one `<g class="marks">`,
so a page script, or a test, can tell a drawn chart from an empty one. Every piece of text is escaped here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

PALETTE = ("#d1495b", "#edae49", "#00798c", "#30638e", "#8f5db7", "#66a182", "#e07a5f", "#3d405b", "#a0a4b8")
"""Colours of the series, in order (error classes by how many there were)."""
BAR = "#4c6ef5"
MUTED = "#adb5bd"
INK = "#212529"
GRID = "#e9ecef"

_FONT = 'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif" font-size="11"'
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 16, 40, 38  # the plot's margins inside the chart


@dataclass(frozen=True, slots=True)
class Marker:
    """A vertical line at a value, labelled (a percentile on a distribution)."""

    label: str
    value: float


@dataclass(frozen=True, slots=True)
class Series:
    """One named row of values, one per category (a stacked layer, or a line)."""

    name: str
    values: Sequence[float]
    color: str


def text(x: float, y: float, content: str, *, anchor: str = "start", fill: str = INK, extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{fill}"{extra}>{escape(content)}</text>'


def _open(name: str, label: str, width: int, height: int) -> str:
    return (
        f'<svg class="chart" data-chart="{escape(name)}" role="img" aria-label="{escape(label)}" '
        f'viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMidYMid meet" {_FONT} '
        'xmlns="http://www.w3.org/2000/svg">'
    )


def nice_ticks(top: float, count: int = 4) -> list[float]:
    """0 and round steps (1, 2 or 5 times a power of ten) up to at least `top`."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(power * m for m in (1, 2, 5, 10) if power * m >= raw)
    return [step * i for i in range(math.ceil(top / step - 1e-9) + 1)]


def log_ticks(low: float, high: float) -> list[float]:
    """1, 2 and 5 times the powers of ten between low and high (only the powers when the span is wide)."""
    steps = (1, 2, 5) if high / low < 1e4 else (1,)
    ticks = []
    for exponent in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1):
        ticks += [m * 10.0**exponent for m in steps if low <= m * 10.0**exponent <= high]
    return ticks


def number(value: float) -> str:
    """A tick label: 1.5k, 20, 0.5."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"


def distribution(
    name: str,
    buckets: Sequence[tuple[float, float, int]],
    markers: Sequence[Marker],
    *,
    unit: str,
    width: int = 560,
    height: int = 240,
    bars: int = 48,
) -> str:
    """A histogram on a log scale of fine (low, high, count) buckets, regrouped into `bars` bars, with markers."""
    positive = [b for b in buckets if b[0] > 0] or [(1.0, 1.0, 0)]
    low = min(b[0] for b in positive)
    high = max(b[1] for b in positive)
    low, high = (low / 1.5, high * 1.5) if high / low < 1.5 else (low, high)
    span = math.log(high / low)
    counts = [0] * bars
    for lower, upper, count in buckets:  # a bucket from 0 (values about 0) goes to the first bar
        middle = math.sqrt(lower * upper) if lower > 0 else low
        counts[min(bars - 1, max(0, int(math.log(middle / low) / span * bars)))] += count
    plot_w, plot_h = width - _LEFT - _RIGHT, height - _TOP - _BOTTOM
    ticks = nice_ticks(max(counts))
    top = ticks[-1]

    def x(value: float) -> float:
        return _LEFT + plot_w * math.log(min(high, max(low, value)) / low) / span

    def y(count: float) -> float:
        return _TOP + plot_h * (1 - count / top)

    parts = [_open(name, f"distribution of {name} ({unit})", width, height)]
    parts += _y_grid(ticks, y, width)
    for tick in log_ticks(low, high):
        parts.append(text(x(tick), height - _BOTTOM + 14, number(tick), anchor="middle", fill="#6c757d"))
    parts.append(text(width - _RIGHT, height - 6, unit, anchor="end", fill="#6c757d"))
    parts.append('<g class="marks">')
    bar_w = plot_w / bars
    for index, count in enumerate(counts):
        if count:
            left = _LEFT + index * bar_w
            parts.append(
                f'<rect x="{left + 0.5:.1f}" y="{y(count):.1f}" width="{max(bar_w - 1, 1):.1f}" '
                f'height="{y(0) - y(count):.1f}" fill="{BAR}" rx="1.5"><title>{escape(f"{count:,}")}</title></rect>'
            )
    parts.append("</g>")
    for row, marker in enumerate(markers):
        at = x(marker.value)
        parts.append(
            f'<line class="marker" data-label="{escape(marker.label)}" data-value="{marker.value!r}" '
            f'x1="{at:.1f}" x2="{at:.1f}" y1="{_TOP - 6 + row * 12:.1f}" y2="{y(0):.1f}" stroke="{PALETTE[row]}" '
            'stroke-width="1.5" stroke-dasharray="4 3"/>'
        )
        label = f"{marker.label} {marker.value:,.0f}" if marker.value >= 100 else f"{marker.label} {marker.value:.1f}"
        anchor = "end" if at > width - _RIGHT - 80 else "start"
        nudge = -4 if anchor == "end" else 4
        parts.append(
            text(at + nudge, _TOP - 8 + row * 12, label, anchor=anchor, fill=PALETTE[row], extra=' font-weight="600"')
        )
    parts.append(_axis(y(0), width))
    parts.append("</svg>")
    return "".join(parts)


def stacked_columns(
    name: str,
    labels: Sequence[str],
    layers: Sequence[Series],
    *,
    line: Series | None = None,
    width: int = 1120,
    height: int = 260,
) -> str:
    """Columns stacked from `layers` (one value per label), with an optional `line` over them (same scale)."""
    columns = len(labels)
    totals = [sum(layer.values[i] for layer in layers) for i in range(columns)]
    peak = max([*totals, *(line.values if line else ()), 1])
    ticks = nice_ticks(peak)
    plot_w, plot_h = width - _LEFT - _RIGHT, height - _TOP - _BOTTOM

    def y(count: float) -> float:
        return _TOP + plot_h * (1 - count / ticks[-1])

    step = plot_w / max(columns, 1)
    bar_w = min(max(step * 0.76, 1), 48)  # a few columns stay columns, not slabs
    parts = [_open(name, name, width, height), *_y_grid(ticks, y, width)]
    shown = max(1, math.ceil(columns / 8))  # at most about 8 time labels
    for index in range(0, columns, shown):
        parts.append(
            text(_LEFT + (index + 0.5) * step, height - _BOTTOM + 14, labels[index], anchor="middle", fill="#6c757d")
        )
    parts.append('<g class="marks">')
    for index in range(columns):
        base = 0.0
        for layer in layers:
            value = layer.values[index]
            if value:
                title = escape(f"{labels[index]} · {layer.name}: {value:,.0f}")
                parts.append(
                    f'<rect x="{_LEFT + (index + 0.5) * step - bar_w / 2:.1f}" y="{y(base + value):.1f}" '
                    f'width="{bar_w:.1f}" height="{y(base) - y(base + value):.1f}" '
                    f'fill="{layer.color}"><title>{title}</title></rect>'
                )
            base += value
    if line is not None:
        if columns > 1:  # one column's value shows as its point alone
            points = " ".join(f"{_LEFT + (i + 0.5) * step:.1f},{y(v):.1f}" for i, v in enumerate(line.values))
            parts.append(f'<polyline points="{points}" fill="none" stroke="{line.color}" stroke-width="2"/>')
        for index, value in enumerate(line.values):
            if value:
                title = escape(f"{labels[index]} · {line.name}: {value:,.0f}")
                parts.append(
                    f'<circle cx="{_LEFT + (index + 0.5) * step:.1f}" cy="{y(value):.1f}" r="3" '
                    f'fill="{line.color}"><title>{title}</title></circle>'
                )
    parts.append("</g>")
    parts.append(_axis(y(0), width))
    parts.append("</svg>")
    return "".join(parts)


def horizontal_bars(
    name: str, rows: Sequence[tuple[str, float, str]], *, color: str = BAR, width: int = 560, row_height: int = 26
) -> str:
    """One bar per (label, value, value as text) row, longest first as given, labels on the left."""
    label_w = min(220, 16 + 7 * max((len(label) for label, _, _ in rows), default=0))
    height = row_height * max(len(rows), 1) + 8
    peak = max((value for _, value, _ in rows), default=0) or 1
    plot_w = width - label_w - 90
    marks, labels = [], []
    for index, (label, value, shown) in enumerate(rows):
        top = 4 + index * row_height
        length = max(plot_w * value / peak, 2 if value else 0)
        if length:
            marks.append(
                f'<rect x="{label_w}" y="{top + 4}" width="{length:.1f}" height="{row_height - 8}" fill="{color}" '
                f'rx="2"><title>{escape(f"{label}: {shown}")}</title></rect>'
            )
        middle = top + row_height / 2 + 4
        labels.append(text(label_w - 8, middle, _clip(label, 30), anchor="end"))
        labels.append(text(label_w + length + 6, middle, shown, fill="#495057"))
    parts = [_open(name, name, width, height), '<g class="marks">', *marks, "</g>", *labels]
    parts.append("</svg>")
    return "".join(parts)


def _clip(label: str, most: int) -> str:
    return label if len(label) <= most else label[: most - 1] + "…"


def _y_grid(ticks: Sequence[float], y: Callable[[float], float], width: int) -> list[str]:
    parts = []
    for tick in ticks:
        parts.append(
            f'<line x1="{_LEFT}" x2="{width - _RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="{GRID}"/>'
        )
        parts.append(text(_LEFT - 6, y(tick) + 4, number(tick), anchor="end", fill="#6c757d"))
    return parts


def _axis(y: float, width: int) -> str:
    return f'<line x1="{_LEFT}" x2="{width - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#868e96"/>'
