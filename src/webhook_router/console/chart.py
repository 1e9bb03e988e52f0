"""Per-minute delivery charts drawn on the server as SVG geometry.

The template only places numbers computed here into an inline `<svg>`, so the overview needs
no script and no chart library, and works under a strict Content-Security-Policy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

WIDTH = 600
HEIGHT = 200
LEFT, RIGHT, TOP, BOTTOM = 48, 24, 12, 28


@dataclass(frozen=True, slots=True)
class Tick:
    at: float
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    title: str
    width: int
    height: int
    left: float
    right: float
    top: float
    bottom: float
    deliveries_path: str
    failures_path: str
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    deliveries: int
    failures: int
    peak: int


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5 times a power of ten that is at least `value` (at least 1)."""
    if value <= 1:
        return 1
    power = int(10 ** math.floor(math.log10(value)))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def minute_chart(
    rows: Iterable[Any],
    *,
    end: datetime,
    minutes: int,
    tick_minutes: int,
    title: str,
) -> Chart:
    """A chart of `minutes` one-minute buckets ending with the minute of `end`.

    `rows` carry `minute`, `deliveries` and `failures` (attempts_per_minute); minutes absent
    from them count zero.
    """
    last = end.replace(second=0, microsecond=0)
    first = last - timedelta(minutes=minutes - 1)
    by_minute = {row["minute"]: (int(row["deliveries"]), int(row["failures"])) for row in rows}
    values = [by_minute.get(first + timedelta(minutes=i), (0, 0)) for i in range(minutes)]
    peak = max((d for d, _ in values), default=0)
    top_value = nice_ceiling(peak)
    left, right, top, bottom = LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM
    step = (right - left) / max(minutes - 1, 1)

    def x(i: int) -> float:
        return left + i * step

    def y(v: int) -> float:
        return bottom - v / top_value * (bottom - top)

    area = [f"M{_fmt(x(0))} {_fmt(bottom)}"]
    area += [f"L{_fmt(x(i))} {_fmt(y(d))}" for i, (d, _) in enumerate(values)]
    area.append(f"L{_fmt(x(minutes - 1))} {_fmt(bottom)}Z")
    line = [f"{'M' if i == 0 else 'L'}{_fmt(x(i))} {_fmt(y(f))}" for i, (_, f) in enumerate(values)]

    x_ticks = []
    for i in range(minutes):
        moment = first + timedelta(minutes=i)
        if (moment.hour * 60 + moment.minute) % tick_minutes == 0:
            x_ticks.append(Tick(x(i), moment.strftime("%H:%M")))
    parts = next(d for d in (5, 4, 2, 1) if top_value % d == 0)
    y_ticks = [
        Tick(y(top_value * i // parts), str(top_value * i // parts)) for i in range(parts + 1)
    ]
    return Chart(
        title=title,
        width=WIDTH,
        height=HEIGHT,
        left=left,
        right=right,
        top=top,
        bottom=bottom,
        deliveries_path=" ".join(area),
        failures_path=" ".join(line),
        x_ticks=x_ticks,
        y_ticks=y_ticks,
        deliveries=sum(d for d, _ in values),
        failures=sum(f for _, f in values),
        peak=peak,
    )
