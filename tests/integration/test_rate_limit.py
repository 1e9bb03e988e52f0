"""A webhook's rate limit holds across every worker process together: a router, a
recorder and 1 or 3 workers as processes of their own on the real services, one webhook
limited to 10/s given 301 events at once, a receiver on 127.0.0.1 recording when each POST
arrives. Every event arrives once (none dropped), no 1-second window holds more than 12
arrivals nor more than 12 starts (the job log's `started_at`: what the limiter spaces), and
the mean from the first arrival to the last is within 10% of the limit. A failure prints
the longest pause before the busiest window: a second or more there is a pile-up after a
stall of the machine.

The measuring is bench/rate_limit.py's (`measure`), which prints the same figures."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from pathlib import Path
from types import ModuleType

import pytest

from webhook_router.settings import Settings

from ..conftest import drop_namespace

pytestmark = pytest.mark.timeout(150)

BENCH = Path(__file__).resolve().parents[2] / "bench" / "rate_limit.py"
RATE = 10.0
SECONDS = 30.0


def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_rate_limit", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_rate_limit"] = module
    spec.loader.exec_module(module)
    return module


def test_figures_count_the_busiest_window_and_the_mean() -> None:
    figures = bench().figures
    steady = figures(1, 8.0, [n * 0.125 for n in range(31)], [str(n) for n in range(31)])
    assert (steady.arrivals, steady.max_window, steady.duplicates) == (31, 8, 0)
    assert steady.mean == pytest.approx(8.0)
    burst = figures(1, 10.0, [0.0] * 13 + [5.0], ["a"] * 14)
    assert (burst.max_window, burst.duplicates) == (13, 13)
    stalled = figures(3, 10.0, [0.0, 0.1, 0.2, *([1.8] * 6)], list("abcdefghi"), [0.0] * 12)
    assert (stalled.max_window, stalled.max_start_window) == (6, 12)
    assert stalled.gap_before == pytest.approx(1.6)


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize("workers", [1, 3])
async def test_rate_limit_holds_across_workers(settings: Settings, workers: int) -> None:
    own = settings.model_copy(update={"namespace": f"wrtest_rate_{uuid.uuid4().hex[:8]}"})
    try:
        figures = await bench().measure(own, workers=workers, rate=RATE, seconds=SECONDS)
    finally:
        await drop_namespace(own.amqp_url[0], own.namespace, schedule=own.schedule)
    print(figures.line())
    assert figures.arrivals == round(RATE * SECONDS) + 1
    assert figures.duplicates == 0
    assert figures.max_window <= 12, figures.line()
    assert figures.max_start_window is not None and figures.max_start_window <= 12, figures.line()
    assert abs(figures.mean - RATE) <= RATE * 0.1, figures.line()
