"""Loss curves as inline SVG: no plotting library and no script in the browser.

Two versions compared side by side share one pair of axes' ranges, so their curves can be
read against each other at a glance.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from html import escape

Series = Mapping[str, list[tuple[float, float]]]

WIDTH, HEIGHT = 480, 260
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 56, 12, 12, 36
COLOURS = {"train": "#1f6fb4", "val": "#d0661a"}


@dataclass(frozen=True)
class Bounds:
    step_min: float
    step_max: float
    loss_min: float
    loss_max: float


def bounds_of(all_series: Iterable[Series]) -> Bounds | None:
    """The ranges covering every point of every series given (None: no points at all)."""
    points = [point for series in all_series for line in series.values() for point in line]
    if not points:
        return None
    steps = [step for step, _ in points]
    losses = [loss for _, loss in points]
    low, high = min(losses), max(losses)
    pad = (high - low) * 0.05 or abs(high) * 0.05 or 1.0
    return Bounds(min(steps), max(steps), low - pad, high + pad)


def loss_svg(series: Series, bounds: Bounds, *, title: str) -> str:
    """An SVG of each series as a polyline, with axis ranges and a legend."""
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    step_span = (bounds.step_max - bounds.step_min) or 1.0
    loss_span = (bounds.loss_max - bounds.loss_min) or 1.0

    def x(step: float) -> float:
        return MARGIN_LEFT + (step - bounds.step_min) / step_span * plot_w

    def y(loss: float) -> float:
        return MARGIN_TOP + (bounds.loss_max - loss) / loss_span * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="loss-chart" role="img" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="{MARGIN_LEFT}" y="{MARGIN_TOP}" width="{plot_w}" height="{plot_h}" '
        'fill="none" stroke="#999"/>',
        _text(MARGIN_LEFT - 4, MARGIN_TOP + 10, _number(bounds.loss_max), "end"),
        _text(MARGIN_LEFT - 4, MARGIN_TOP + plot_h, _number(bounds.loss_min), "end"),
        _text(MARGIN_LEFT, HEIGHT - MARGIN_BOTTOM + 14, _number(bounds.step_min), "start"),
        _text(WIDTH - MARGIN_RIGHT, HEIGHT - MARGIN_BOTTOM + 14, _number(bounds.step_max), "end"),
        _text(MARGIN_LEFT + plot_w / 2, HEIGHT - 4, "step", "middle"),
    ]
    legend_x = MARGIN_LEFT + 8
    for name, line in series.items():
        if not line:
            continue
        colour = COLOURS.get(name, "#444")
        points = " ".join(f"{x(step):.1f},{y(loss):.1f}" for step, loss in line)
        parts.append(
            f'<polyline class="loss-{escape(name)}" fill="none" stroke="{colour}" '
            f'stroke-width="2" points="{points}"/>'
        )
        if len(line) == 1:  # a lone point draws no line: mark it
            step, loss = line[0]
            parts.append(f'<circle cx="{x(step):.1f}" cy="{y(loss):.1f}" r="3" fill="{colour}"/>')
        parts.append(
            f'<line x1="{legend_x}" y1="{MARGIN_TOP + 12}" x2="{legend_x + 16}" '
            f'y2="{MARGIN_TOP + 12}" stroke="{colour}" stroke-width="2"/>'
        )
        parts.append(_text(legend_x + 20, MARGIN_TOP + 16, f"{name} loss", "start"))
        legend_x += 90
    parts.append("</svg>")
    return "".join(parts)


def _text(x: float, y: float, text: str, anchor: str) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="11" text-anchor="{anchor}">{escape(text)}</text>'
    )


def _number(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.3g}"
