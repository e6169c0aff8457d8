"""A line chart as SVG, with nothing but the standard library (no plotting package in the lock).

:func:`chart` draws panels stacked one above the other, sharing the time axis: each panel has
its own y axis and named series, drawn solid or dashed, and may shade spans of time (the
soak's warm-up and the two windows it compares).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

WIDTH = 960
PANEL_HEIGHT = 260
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 70, 190, 40, 45
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf",
           "#7f7f7f")


@dataclass(frozen=True)
class Series:
    name: str
    points: list[tuple[float, float]]
    colour: int = 0
    dashed: bool = False


@dataclass(frozen=True)
class Span:
    label: str
    start: float
    end: float
    fill: str


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    series: list[Series]
    spans: list[Span] = field(default_factory=list)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round values (1, 2 or 5 times a power of ten apart) covering
    ``low``..``high``."""
    if high <= low:
        high = low + 1.0
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    # A point a hair past a round end (a sample at 600.03 s of a 600 s run) needs no tick of
    # its own: it is drawn a hair past the axis.
    if ticks[-1] < high - step * 0.01:
        ticks.append(round(value, 10))
    return ticks


def _number(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e6 else f"{value:.3g}"


def chart(title: str, x_label: str, panels: list[Panel]) -> str:
    xs = [x for p in panels for s in p.series for x, _ in s.points]
    x_ticks = nice_ticks(min(xs, default=0.0), max(xs, default=1.0), 8)
    x_low, x_high = x_ticks[0], x_ticks[-1]
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    height = MARGIN_TOP + len(panels) * (PANEL_HEIGHT + MARGIN_BOTTOM)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
           f'<text x="{WIDTH / 2}" y="22" text-anchor="middle" font-size="15">'
           f'{escape(title)}</text>']

    def sx(x: float) -> float:
        return MARGIN_LEFT + (x - x_low) / (x_high - x_low) * plot_w

    for index, panel in enumerate(panels):
        top = MARGIN_TOP + index * (PANEL_HEIGHT + MARGIN_BOTTOM) + 10
        bottom = top + PANEL_HEIGHT - 20
        ys = [y for s in panel.series for _, y in s.points]
        y_ticks = nice_ticks(0.0, max(ys, default=1.0) * 1.05)
        y_high = y_ticks[-1]

        def sy(y: float, top: float = top, bottom: float = bottom, y_high: float = y_high,
               ) -> float:
            return bottom - y / y_high * (bottom - top)

        for span in panel.spans:
            left, right = sx(max(span.start, x_low)), sx(min(span.end, x_high))
            out.append(f'<rect x="{left:.1f}" y="{top}" width="{max(0.0, right - left):.1f}" '
                       f'height="{bottom - top}" fill="{span.fill}"/>')
            out.append(f'<text x="{left + 3:.1f}" y="{top + 12}" fill="#555" font-size="10">'
                       f'{escape(span.label)}</text>')
        for tick in y_ticks:
            y = sy(tick)
            out.append(f'<line x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT + plot_w}" y1="{y:.1f}" '
                       f'y2="{y:.1f}" stroke="#e5e5e5"/>')
            out.append(f'<text x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                       f'{_number(tick)}</text>')
        for tick in x_ticks:
            x = sx(tick)
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 4}" '
                       f'stroke="#333"/>')
            out.append(f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">'
                       f'{_number(tick)}</text>')
        out.append(f'<rect x="{MARGIN_LEFT}" y="{top}" width="{plot_w}" '
                   f'height="{bottom - top}" fill="none" stroke="#333"/>')
        out.append(f'<text x="{MARGIN_LEFT}" y="{top - 4}">{escape(panel.title)} '
                   f'({escape(panel.unit)})</text>')
        out.append(f'<text x="{MARGIN_LEFT + plot_w / 2}" y="{bottom + 32}" '
                   f'text-anchor="middle" fill="#555">{escape(x_label)}</text>')
        for number, series in enumerate(panel.series):
            colour = COLOURS[series.colour % len(COLOURS)]
            dash = ' stroke-dasharray="5,3"' if series.dashed else ""
            if series.points:
                path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in series.points)
                out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" '
                           f'stroke-width="1.6"{dash}/>')
            legend_y = top + 14 + number * 16
            legend_x = MARGIN_LEFT + plot_w + 12
            out.append(f'<line x1="{legend_x}" x2="{legend_x + 22}" y1="{legend_y - 4}" '
                       f'y2="{legend_y - 4}" stroke="{colour}" stroke-width="2"{dash}/>')
            out.append(f'<text x="{legend_x + 28}" y="{legend_y}">{escape(series.name)}'
                       f'</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
