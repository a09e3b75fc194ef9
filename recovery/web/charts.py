"""The dashboard's charts: server-side SVG from pygal, inlined in the page.

pygal writes an inline `<script>` with its tooltip config and comments naming its website; both
are removed, so the page carries no script and names no outside address (the dashboard works
with JavaScript off and loads nothing from a CDN). Values are printed on the bars instead of in
tooltips, and every chart sits next to a table with the same numbers.

An SVG scales with its box, text and all: one drawn for a 1,250 px column shrinks to 6 px
letters on a 390 px phone. So each chart is drawn twice, for a wide box and for a phone's, and
the page's CSS shows one (`.for-wide` / `.for-phone`). Value axes step by 1, 2 or 5 times a
power of ten (`nice_ticks`), never 0/20/40/60/90.

Drawing is the slow part of the overview (pygal builds each SVG as an element tree: ~15-25 ms a
chart, 12 per page), while the figures behind a chart change only when money moves. So each chart
is memoized on its figures (`_memo`): the figures are still computed fresh on every view, and a
chart is drawn again whenever any of them differs.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import pygal
from babel.numbers import format_currency, format_decimal
from markupsafe import Markup
from pygal.style import Style

from recovery.i18n import major_units

LOCALE = "en"
FAILED, RECOVERED, NEUTRAL = "#b3261e", "#137333", "#0b57d0"

_SCRIPT = re.compile(r"<script\b.*?</script>", re.S)
_COMMENT = re.compile(r"<!--.*?-->", re.S)


def _frozen(value: Any) -> Any:
    """A chart's figures as a hashable key: lists and tuples, nested, become tuples."""
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


def _memo(draw_chart: Callable[..., Markup]) -> Callable[..., Markup]:
    """`draw_chart` memoized on its arguments (a few dozen charts: a dashboard's periods and
    currencies; a memo entry is two SVGs of 5-30 kB)."""
    cached = functools.lru_cache(maxsize=96)(draw_chart)

    @functools.wraps(draw_chart)
    def memoized(*args: Any, **kwargs: Any) -> Markup:
        frozen = {k: _frozen(v) for k, v in kwargs.items()}
        return cached(*(_frozen(a) for a in args), **frozen)

    return memoized


def _style(*colors: str, narrow: bool = False) -> Any:
    # Drawn at a phone's width the SVG is shown at about its own size: 14-unit labels read as
    # 12-13 px there, as the wide drawing's 12-unit labels do in a 600 px column.
    size = 14 if narrow else 12
    return Style(
        background="#ffffff",
        plot_background="#ffffff",
        foreground="#374151",
        foreground_strong="#1c1c1c",
        foreground_subtle="#d6d9de",
        colors=colors or (NEUTRAL,),
        font_family='system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif',
        label_font_size=size,
        major_label_font_size=size,
        value_font_size=size - 1,
        legend_font_size=size,
        title_font_size=size + 2,
        tooltip_font_size=size,
    )


def _config(**options: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "js": [],  # no pygal.js from its CDN
        "disable_xml_declaration": True,  # inline in HTML
        "width": 720,
        "height": 320,
        "legend_at_bottom": True,
        "legend_at_bottom_columns": 2,
        "legend_box_size": 12,
        "print_values": True,
        "print_zeroes": False,
        "truncate_label": -1,
        "truncate_legend": -1,
        "margin": 8,
        "margin_right": 28,  # room for the last value label
        "show_y_guides": True,
        "show_x_guides": False,
    }
    base.update(options)
    return base


PHONE_WIDTH = 360


def _both(draw: Callable[[int], Any], label: str, width: int) -> Markup:
    """The chart drawn at `width` and at a phone's width, the page showing one of them."""
    wide = _inline(draw(width), label)
    narrow = _inline(draw(PHONE_WIDTH), label)
    return Markup('<div class="for-wide">{}</div><div class="for-phone">{}</div>').format(
        wide, narrow
    )


def _inline(chart: Any, label: str) -> Markup:
    """The chart as an `<svg>` element for the page: no script, no comments, an accessible
    name (the figures are in the table next to it)."""
    svg = str(chart.render(is_unicode=True))
    svg = _SCRIPT.sub("", svg)
    svg = _COMMENT.sub("", svg)
    safe_label = Markup.escape(label)
    svg = svg.replace("<svg ", f'<svg role="img" aria-label="{safe_label}" ', 1)
    return Markup(svg)  # pygal escapes the labels and values it writes


def money_formatter(currency: str) -> Callable[[Any], str]:
    def fmt(value: Any) -> str:
        if value is None:
            return ""
        return format_currency(Decimal(str(value)), currency.upper(), locale=LOCALE)

    return fmt


def count_formatter(value: Any) -> str:
    return "" if value is None else format_decimal(value, locale=LOCALE)


def _major(amount: int, currency: str) -> float | None:
    # None draws no bar and prints no "$0.00" over the axis.
    return float(major_units(amount, currency)) if amount else None


def nice_ticks(top: float, most: int = 4) -> list[float]:
    """Round guide values from 0 past `top`, evenly spaced: steps of 1, 2 or 5 times a power of
    ten (at least 1: counts and whole currency units)."""
    if top <= 0:
        return [0.0, 1.0]
    raw = max(top / most, 1e-9)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    step = max(step, 1)
    count = math.ceil(top / step)
    return [round(i * step, 10) for i in range(count + 1)]


def _top_down(rows: Sequence[Any]) -> list[Any]:
    # pygal draws a horizontal chart's first label at the bottom; the tables read top-down.
    return list(reversed(rows))


@_memo
def weekly_trend(
    weeks: Sequence[tuple[str, int, int]], currency: str, label: str = "Failed and recovered"
) -> Markup:
    """(week label, failed amount, recovered amount) per week, amounts in minor units."""
    fmt = money_formatter(currency)
    top = max((_major(max(w[1], w[2]), currency) or 0 for w in weeks), default=0)
    ticks = nice_ticks(top)

    def draw(width: int) -> Any:
        narrow = width < 500
        chart = pygal.Bar(
            **_config(
                style=_style(FAILED, RECOVERED, narrow=narrow),
                value_formatter=fmt,
                print_values=len(weeks) <= (4 if narrow else 8),
                x_label_rotation=-45 if len(weeks) > (5 if narrow else 8) else 0,
                show_minor_x_labels=len(weeks) <= 16,
                x_labels_major_every=max(1, len(weeks) // 8),
                width=width,
                height=300 if narrow else 360,
                margin_bottom=16,
                y_labels=ticks,
                range=(0, ticks[-1]),
                legend_at_bottom_columns=2,
            )
        )
        chart.x_labels = [w[0] for w in weeks]
        chart.add("Failed", [_major(w[1], currency) for w in weeks])
        chart.add("Recovered", [_major(w[2], currency) for w in weeks])
        return chart

    return _both(draw, f"{label} per week", 720)


@_memo
def recovery_by_month(rows: Sequence[tuple[str, tuple[float | None, ...]]], label: str) -> Markup:
    """Per month, the share recovered within 30, 60 and 90 days (0..1; None: window open)."""

    def draw(width: int) -> Any:
        narrow = width < 500
        chart = pygal.Bar(
            **_config(
                style=_style("#93b5e8", "#4a7fd4", "#0b3d91", narrow=narrow),
                value_formatter=lambda v: "" if v is None else f"{v:.0f} %",
                print_values=False,
                x_label_rotation=-45 if narrow else 0,
                width=width,
                height=380 if narrow else 340,
                y_labels=[0, 25, 50, 75, 100],
                range=(0, 100),
                legend_at_bottom_columns=1 if narrow else 3,
            )
        )
        chart.x_labels = [r[0] for r in rows]
        for i, days in enumerate((30, 60, 90)):
            values = [r[1][i] for r in rows]
            chart.add(
                f"within {days} days",
                [None if v is None else round(v * 100, 1) for v in values],
            )
        return chart

    return _both(draw, label, 720)


@_memo
def horizontal_amounts(
    rows: Sequence[tuple[str, int]], currency: str, series: str, label: str, color: str = NEUTRAL
) -> Markup:
    """One horizontal bar per (label, amount in minor units)."""
    ticks = nice_ticks(max((_major(r[1], currency) or 0 for r in rows), default=0), most=3)
    rows = _top_down(rows)

    def draw(width: int) -> Any:
        chart = pygal.HorizontalBar(
            **_config(
                style=_style(color, narrow=width < 500),
                value_formatter=money_formatter(currency),
                show_legend=False,
                width=width,
                height=max(140, 36 * len(rows) + 50),
                y_labels=ticks,
                range=(0, ticks[-1]),
            )
        )
        chart.x_labels = [r[0] for r in rows]
        chart.add(series, [_major(r[1], currency) for r in rows])
        return chart

    return _both(draw, label, 480)


@_memo
def failed_vs_recovered(rows: Sequence[tuple[str, int, int]], currency: str, label: str) -> Markup:
    """(label, failed amount, recovered amount) per group, as side-by-side bars."""
    ticks = nice_ticks(
        max((_major(max(r[1], r[2]), currency) or 0 for r in rows), default=0), most=3
    )
    rows = _top_down(rows)

    def draw(width: int) -> Any:
        chart = pygal.HorizontalBar(
            **_config(
                style=_style(FAILED, RECOVERED, narrow=width < 500),
                value_formatter=money_formatter(currency),
                width=width,
                height=max(160, 48 * len(rows) + 80),
                y_labels=ticks,
                range=(0, ticks[-1]),
            )
        )
        chart.x_labels = [r[0] for r in rows]
        chart.add("Failed", [_major(r[1], currency) for r in rows])
        chart.add("Recovered", [_major(r[2], currency) for r in rows])
        return chart

    return _both(draw, label, 480)


@_memo
def horizontal_counts(rows: Sequence[tuple[str, int]], series: str, label: str) -> Markup:
    top = max((r[1] for r in rows), default=0)
    ticks = [int(t) for t in nice_ticks(max(top, 1), most=4) if t == int(t)]
    rows = _top_down(rows)

    def draw(width: int) -> Any:
        chart = pygal.HorizontalBar(
            **_config(
                style=_style(NEUTRAL, narrow=width < 500),
                value_formatter=count_formatter,
                show_legend=False,
                width=width,
                height=max(140, 36 * len(rows) + 50),
                range=(0, ticks[-1]),
                y_labels=ticks,
            )
        )
        chart.x_labels = [r[0] for r in rows]
        chart.add(series, [r[1] or None for r in rows])
        return chart

    return _both(draw, label, 480)


@_memo
def horizontal_rates(rows: Sequence[tuple[str, float | None]], series: str, label: str) -> Markup:
    """One horizontal bar per (label, rate 0..1; None: no finished outcome yet), in percent."""

    def draw(width: int) -> Any:
        narrow = width < 500
        chart = pygal.HorizontalBar(
            **_config(
                style=_style(RECOVERED, narrow=narrow),
                value_formatter=lambda v: "" if v is None else f"{v:g} %",
                show_legend=False,
                width=width,
                height=max(140, 36 * len(rows) + 50),
                range=(0, 100),
                y_labels=[0, 50, 100] if narrow else [0, 25, 50, 75, 100],
            )
        )
        chart.x_labels = [r[0] for r in reversed(rows)]
        chart.add(series, [None if r[1] is None else round(r[1] * 100, 1) for r in reversed(rows)])
        return chart

    return _both(draw, label, 480)
