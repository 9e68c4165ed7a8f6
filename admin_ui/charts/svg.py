"""A chart's geometry (:class:`admin_ui.charts.figure.Chart`) as SVG markup.

Written here with f-strings rather than in a Jinja loop: an hourly week is three charts of 168
columns, and building their few thousand elements in Python costs a fraction of the template's
attribute lookups. Every text that comes from data (titles, labels) goes through ``escape``; the
numbers are the geometry's own floats. Presentation is in ``admin.css`` (classes only, no inline
style: the console's Content-Security-Policy has no ``'unsafe-inline'``).
"""

from __future__ import annotations

from markupsafe import Markup, escape

from admin_ui.charts.figure import Chart, Column, Line


def svg(chart: Chart) -> Markup:
    """The ``<svg>`` of ``chart``: axes, one hoverable column per bucket, lines, "no data" if empty."""
    c = chart
    parts = [
        f'<svg viewBox="0 0 {c.width} {c.height}" role="img" aria-label="{escape(c.title)}" '
        'xmlns="http://www.w3.org/2000/svg">',
        _axes(c),
        *(_column(c, col) for col in c.columns),
        *(_line(line) for line in c.lines),
    ]
    if c.empty:
        mid_x, mid_y = (c.left + c.right) / 2, (c.top + c.bottom) / 2
        parts.append(f'<text class="empty" x="{mid_x}" y="{mid_y}">No requests in this period</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # every text above that is not a number was escaped


def _axes(c: Chart) -> str:
    y = "".join(
        f'<line class="grid" x1="{c.left}" x2="{c.right}" y1="{t.pos}" y2="{t.pos}"/>'
        f'<text x="{c.left - 5}" y="{t.pos}" dy=".32em">{escape(t.label)}</text>'
        for t in c.y_ticks
    )
    x = "".join(
        f'<line x1="{t.pos}" x2="{t.pos}" y1="{c.bottom}" y2="{c.bottom + 4}"/>'
        f'<text x="{t.pos}" y="{c.bottom + 16}">{escape(t.label)}</text>'
        for t in c.x_ticks
    )
    base = f'<line x1="{c.left}" x2="{c.right}" y1="{c.bottom}" y2="{c.bottom}"/>'
    return f'<g class="axis y">{y}</g><g class="axis x">{base}{x}</g>'


def _column(c: Chart, col: Column) -> str:
    bars = "".join(f'<rect class="{b.css}" x="{b.x}" y="{b.y}" width="{b.w}" height="{b.h}"/>' for b in col.bars)
    hit = f'<rect class="hit" x="{col.x}" y="{c.top}" width="{col.w}" height="{c.bottom - c.top}"/>'
    return f'<g class="col"><title>{escape(col.title)}</title>{hit}{bars}</g>'


def _line(line: Line) -> str:
    segments = "".join(f'<polyline points="{points}"/>' for points in line.segments)
    dots = "".join(f'<circle cx="{x}" cy="{y}" r="2"/>' for x, y in line.dots)
    return f'<g class="line {escape(line.css)}">{segments}{dots}</g>'
