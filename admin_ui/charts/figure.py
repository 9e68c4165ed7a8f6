"""The geometry of a time chart, drawn by the server as SVG (``templates/_chart.html``).

A chart is a value axis (nice ticks from zero, grid lines, short labels), a time axis (round UTC
hours or days) and one column per bucket. Series are drawn as bars (overlaid from the baseline, so
"errors" sits inside "requests" and "prompt" inside "tokens") or as lines with a dot per point.
Each column is a group with a ``<title>`` naming the bucket and every series' value in full, and an
invisible full-height target: hovering anywhere in the column shows the values, with no script,
under the console's Content-Security-Policy. The SVG has a fixed ``viewBox`` and scales to its
container (a 390 px phone or a desktop card), its text with it, so the sizes below are chosen to
stay legible at a phone's width.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from admin_ui.charts.scale import grouped, short_number, time_label, time_ticks, time_title, value_scale

WIDTH, HEIGHT = 400, 210
LEFT, RIGHT, TOP, BOTTOM = 42, 10, 10, 26  # room for the value labels and the time labels


@dataclass(frozen=True)
class Series:
    """A named row of values, one per bucket (None: nothing to show there, e.g. no latency)."""

    name: str
    css: str
    values: Sequence[float | None]
    kind: Literal["bar", "line"] = "bar"
    unit: str = ""


@dataclass(frozen=True)
class Tick:
    pos: float
    label: str


@dataclass(frozen=True)
class Bar:
    css: str
    x: float
    y: float
    w: float
    h: float


@dataclass(frozen=True)
class Column:
    """One bucket: its hover target (``x``, ``w`` over the plot's height), title and bars."""

    x: float
    w: float
    title: str
    bars: list[Bar]


@dataclass(frozen=True)
class Line:
    css: str
    segments: list[str]  # polyline point lists ("x,y x,y"), broken where a value is missing
    dots: list[tuple[float, float]]


@dataclass(frozen=True)
class Chart:
    ident: str
    title: str
    width: int = WIDTH
    height: int = HEIGHT
    left: float = LEFT
    right: float = WIDTH - RIGHT
    top: float = TOP
    bottom: float = HEIGHT - BOTTOM
    y_ticks: list[Tick] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)
    columns: list[Column] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    legend: list[tuple[str, str]] = field(default_factory=list)
    empty: bool = True


def time_chart(ident: str, title: str, starts: Sequence[float], hours: int, series: Sequence[Series]) -> Chart:
    """The chart of ``series`` over buckets starting at ``starts`` (Unix seconds), ``hours`` long."""
    n = len(starts)
    shown = [v for s in series for v in s.values if v is not None]
    scale = value_scale(max(shown, default=0.0))
    plot_h, slot = HEIGHT - BOTTOM - TOP, (WIDTH - RIGHT - LEFT) / max(n, 1)
    per_unit = plot_h / scale.top

    def y_of(value: float) -> float:
        return round(HEIGHT - BOTTOM - min(max(value, 0.0), scale.top) * per_unit, 2)

    y_ticks = [Tick(y_of(t), short_number(t)) for t in scale.ticks]
    first = int(starts[0] // (hours * 3600)) if n else 0
    years = {time_label(s, 24, with_year=True)[:4] for s in (starts[0], starts[-1])} if n else set()
    x_ticks = [
        Tick(round(LEFT + (i + 0.5) * slot, 2), time_label(starts[i], hours, with_year=len(years) > 1))
        for i in time_ticks(first, n, hours, most=4 if len(years) > 1 else 6)
    ]
    columns = _columns(starts, hours, slot, series, y_of)
    lines = [_line(s, slot, y_of) for s in series if s.kind == "line"]
    return Chart(
        ident,
        title,
        y_ticks=y_ticks,
        x_ticks=x_ticks,
        columns=columns,
        lines=lines,
        legend=[(s.css, s.name) for s in series],
        empty=not any(shown),
    )


def _columns(
    starts: Sequence[float], hours: int, slot: float, series: Sequence[Series], y_of: Callable[[float], float]
) -> list[Column]:
    """One column per bucket: its bars (each from the baseline) and its title with every series' value."""
    texts = [[f"{s.name} {_value(v, s.unit)}" for v in s.values] for s in series]
    tops = [(s.css, [y_of(v) if v else None for v in s.values]) for s in series if s.kind == "bar"]
    base, gap = y_of(0), min(slot * 0.15, 2.0)
    width = round(max(slot - gap, 0.5), 2)
    columns = []
    for i, start in enumerate(starts):
        x = LEFT + i * slot
        left = round(x + gap / 2, 2)
        bars = [Bar(css, left, y, width, round(base - y, 2)) for css, ys in tops if (y := ys[i]) is not None]
        title = f"{time_title(start, hours)}: " + ", ".join(t[i] for t in texts)
        columns.append(Column(round(x, 2), round(slot, 2), title, bars))
    return columns


def _value(value: float | None, unit: str) -> str:
    return "none" if value is None else grouped(value) + (f" {unit}" if unit else "")


def _line(series: Series, slot: float, y_of: Callable[[float], float]) -> Line:
    segments: list[list[str]] = [[]]
    dots = []
    for i, value in enumerate(series.values):
        if value is None:
            if segments[-1]:
                segments.append([])
            continue
        point = (round(LEFT + (i + 0.5) * slot, 2), y_of(value))
        segments[-1].append(f"{point[0]},{point[1]}")
        dots.append(point)
    return Line(series.css, [" ".join(s) for s in segments if len(s) > 1], dots)
