"""Server-side SVG line charts for the admin: no JavaScript, nothing fetched from elsewhere."""

from datetime import UTC, datetime
from html import escape

WIDTH, HEIGHT = 960, 280
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 60, 20, 20, 40
COLOURS = {"accepted": "#2b7bb9", "delivered": "#3a9d23", "rejected": "#c0392b"}
# Delivered usually equals accepted a moment later: dashes keep both lines visible.
STROKES = {"accepted": 'stroke-width="3"', "delivered": 'stroke-width="2" stroke-dasharray="6,4"'}
DEFAULT_STROKE = 'stroke-width="1.5"'
Y_TICKS = 4
X_TICKS = 6


def nice_ceiling(value: int) -> int:
    """Round up to 1, 2 or 5 times a power of ten, so the axis labels read well."""
    if value <= 0:
        return 1
    magnitude = 1
    while magnitude * 10 <= value:
        magnitude *= 10
    for factor in (1, 2, 5, 10):
        if value <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def line_chart(*, series: dict[str, list[int]], start: int, step_s: int, title: str) -> str:
    """Draw each series as a line with a circle per non-zero point; x is time, y is events."""
    length = max(len(values) for values in series.values())
    top = nice_ceiling(max((max(values, default=0) for values in series.values()), default=0))
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM

    def x(index: int) -> float:
        return MARGIN_LEFT + plot_w * (index / max(1, length - 1))

    def y(value: int) -> float:
        return MARGIN_TOP + plot_h * (1 - value / top)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="ingest-chart" width="{WIDTH}" '
        f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="{MARGIN_LEFT}" y="{MARGIN_TOP}" width="{plot_w}" height="{plot_h}" '
        'fill="#fbfbfb" stroke="#ccc"/>',
    ]
    for tick in range(Y_TICKS + 1):
        value = top * tick // Y_TICKS
        parts.append(
            f'<line x1="{MARGIN_LEFT}" x2="{WIDTH - MARGIN_RIGHT}" y1="{y(value):.1f}" '
            f'y2="{y(value):.1f}" stroke="#eee"/>'
            f'<text x="{MARGIN_LEFT - 6}" y="{y(value) + 4:.1f}" font-size="11" '
            f'text-anchor="end">{value}</text>'
        )
    for tick in range(X_TICKS + 1):
        index = (length - 1) * tick // X_TICKS
        label = datetime.fromtimestamp(start + index * step_s, tz=UTC).strftime("%H:%M")
        parts.append(
            f'<text x="{x(index):.1f}" y="{HEIGHT - MARGIN_BOTTOM + 16}" font-size="11" '
            f'text-anchor="middle">{label}</text>'
        )
    for position, (name, values) in enumerate(series.items()):
        colour = COLOURS.get(name, "#555")
        coordinates = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        parts.append(
            f'<polyline class="series series-{escape(name)}" fill="none" stroke="{colour}" '
            f'{STROKES.get(name, DEFAULT_STROKE)} points="{coordinates}"/>'
        )
        for index, value in enumerate(values):
            if value:
                moment = datetime.fromtimestamp(start + index * step_s, tz=UTC)
                parts.append(
                    f'<circle class="point point-{escape(name)}" data-series="{escape(name)}" '
                    f'data-value="{value}" data-time="{moment:%Y-%m-%dT%H:%M}Z" '
                    f'cx="{x(index):.1f}" cy="{y(value):.1f}" r="3" fill="{colour}">'
                    f"<title>{escape(name)} {value} at {moment:%H:%M} UTC</title></circle>"
                )
        legend_x = MARGIN_LEFT + 10 + position * 110
        parts.append(
            f'<rect x="{legend_x}" y="{MARGIN_TOP + 6}" width="10" height="10" '
            f'fill="{colour}"/><text x="{legend_x + 14}" y="{MARGIN_TOP + 15}" '
            f'font-size="12">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
