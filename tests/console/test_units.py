"""The console's pure parts: sessions, throttle, redirects, run links, parse pointers, charts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from webhook_router.console.access import safe_next
from webhook_router.console.app import FormReader, form_time, run_link
from webhook_router.console.chart import BOTTOM, HEIGHT, LEFT, minute_chart, nice_ceiling
from webhook_router.console.render import pointer, space_url
from webhook_router.console.sessions import Devices, LoginThrottle, Sessions, same_secret
from webhook_router.expressions import ExpressionSyntaxError, compile_filter, compile_url
from webhook_router.store import like_escape

pytestmark = pytest.mark.timeout(10)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_expires_after_its_lifetime_and_ids_are_unguessable() -> None:
    clock = Clock()
    sessions = Sessions(lifetime=60, clock=clock)
    one, two = sessions.create(b"h"), sessions.create(b"h")
    assert one.id != two.id and one.csrf != two.csrf and one.csrf != one.id
    assert len(one.id) >= 40 and len(one.csrf) >= 40
    assert sessions.get(one.id) is one
    clock.now += 59
    assert sessions.get(one.id) is one
    clock.now += 1
    assert sessions.get(one.id) is None
    assert sessions.get(None) is None and sessions.get("") is None
    sessions.create(b"h")
    assert len(sessions) == 1, "a login prunes the expired sessions"


def test_a_dropped_session_is_gone() -> None:
    sessions = Sessions()
    session = sessions.create(b"h")
    sessions.drop(session.id)
    assert sessions.get(session.id) is None


def test_flashes_show_once() -> None:
    session = Sessions().create(b"h")
    session.flash("ok", "saved")
    assert session.take_flashes() == [("ok", "saved")]
    assert session.take_flashes() == []


def test_secrets_compare_exactly() -> None:
    assert same_secret("x", "x") and not same_secret(None, "x") and not same_secret("y", "x")


def test_throttle_blocks_after_the_limit_then_forgets() -> None:
    clock = Clock()
    throttle = LoginThrottle(limit=3, window=60, clock=clock)
    for _ in range(3):
        assert not throttle.blocked("1.2.3.4")
        throttle.failed("1.2.3.4")
    assert throttle.blocked("1.2.3.4")
    assert not throttle.blocked("5.6.7.8")
    clock.now += 61
    assert not throttle.blocked("1.2.3.4")
    throttle.failed("1.2.3.4")
    throttle.succeeded("1.2.3.4")
    assert not throttle.blocked("1.2.3.4")


def test_the_throttle_prunes_keys_whose_failures_are_past_the_window() -> None:
    clock = Clock()
    throttle = LoginThrottle(limit=3, window=60, clock=clock)
    for n in range(100):
        throttle.failed(f"address:10.0.0.{n}")
    assert len(throttle) == 100
    clock.now += 61
    throttle.failed("address:10.0.1.1")
    assert len(throttle) == 1, "a failure prunes every key whose last failure left the window"


def test_a_known_device_keeps_its_id_and_is_forgotten_after_its_lifetime() -> None:
    clock = Clock()
    devices = Devices(lifetime=100, clock=clock)
    one = devices.remember(None)
    assert devices.known(one) and not devices.known("made-up") and not devices.known(None)
    assert devices.remember(one) == one, "a known browser keeps its id"
    assert devices.remember("made-up") != "made-up", "an id the console never gave is replaced"
    clock.now += 101
    assert not devices.known(one)
    devices.remember(None)
    assert len(devices) == 1, "a login prunes the devices past their lifetime"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/console/spaces/acme/jobs?status=Failed", "/console/spaces/acme/jobs?status=Failed"),
        ("https://elsewhere.example/", "/console/"),
        ("//elsewhere.example/console/", "/console/"),
        ("/console//elsewhere.example", "/console/"),
        ("/console/\\elsewhere", "/console/"),
        ("/app/api/v1/webhooks", "/console/"),
        (None, "/console/"),
    ],
)
def test_login_only_returns_to_the_console(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


def test_run_link_fills_the_template_and_refuses_other_schemes() -> None:
    assert run_link("https://engine/app/runs/{run}", "42") == "https://engine/app/runs/42"
    assert run_link("/runs/{run}?x=1", "7") == "/runs/7?x=1"
    assert run_link("https://engine/{run}", "a/b") == "https://engine/a%2Fb"
    assert run_link("javascript:alert({run})", "1") is None
    assert run_link(None, "1") is None
    assert run_link("https://engine/{run}", None) is None
    # the same rules for a trace viewer's page, with its own key
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    assert run_link("https://j/trace/{trace}", trace, key="{trace}") == f"https://j/trace/{trace}"
    assert run_link("https://j/trace/{run}", trace, key="{trace}") == "https://j/trace/{run}"
    assert run_link("javascript:{trace}", trace, key="{trace}") is None


def test_form_dates_are_utc_unless_they_say_otherwise() -> None:
    assert form_time("2024-05-01T12:30") == datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    assert form_time("2024-05-01T12:30:00+02:00") == datetime(2024, 5, 1, 10, 30, tzinfo=UTC)
    assert form_time("2024-05-01T12:30:00Z") == datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    with pytest.raises(ValueError, match="date and time"):
        form_time("yesterday")
    # a form reader reads an empty value as none, notes a bad one, and reads on
    reader = FormReader({"start": " ", "end": "yesterday", "limit": "7"})
    assert reader.get("start", form_time) is None
    assert reader.get("end", form_time) is None
    assert reader.get("limit", int) == 7
    assert [(e.field, "date and time" in e.message) for e in reader.errors] == [("end", True)]


def test_space_urls_encode_each_part() -> None:
    assert space_url("a b", "jobs", "x/y", status="Failed", webhook=None) == (
        "/console/spaces/a%20b/jobs/x%2Fy?status=Failed"
    )


def test_like_escape_makes_wildcards_literal() -> None:
    assert like_escape("50%_off\\") == "50\\%\\_off\\\\"


def test_pointer_marks_the_parsers_position_on_its_line() -> None:
    text = "values('Status') == 'Open' &&\n  values('Priority') =="
    with pytest.raises(ExpressionSyntaxError) as caught:
        compile_filter(text)
    found = pointer(text, caught.value)
    assert found.message == str(caught.value)
    assert found.position == caught.value.position == len(text)
    assert found.line == 2
    assert found.excerpt == "  values('Priority') =="
    assert found.caret == " " * len("  values('Priority') ==") + "^"
    assert found.as_json()["expected"] == caught.value.expected


def test_pointer_of_a_url_error() -> None:
    text = "/run-tree/${kapp('slug'}/x"
    with pytest.raises(ExpressionSyntaxError) as caught:
        compile_url(text)
    found = pointer(text, caught.value)
    assert found.line == 1 and found.excerpt == text
    assert found.caret.index("^") == caught.value.position


def test_nice_ceiling() -> None:
    assert [nice_ceiling(v) for v in (0, 1, 2, 3, 7, 10, 11, 49, 51, 240)] == [
        1,
        1,
        2,
        5,
        10,
        10,
        20,
        50,
        100,
        500,
    ]


@pytest.mark.parametrize(
    ("peak", "labels"),
    [
        (0, "0 1"),
        (2, "0 1 2"),
        (3, "0 1 2 3 4 5"),
        (11, "0 4 8 12 16 20"),
        (70, "0 20 40 60 80 100"),
    ],
)
def test_chart_axis_ticks_are_round(peak: int, labels: str) -> None:
    end = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    rows = [{"minute": end, "deliveries": peak, "failures": 0}]
    chart = minute_chart(rows, end=end, minutes=60, tick_minutes=10, title="t")
    assert " ".join(t.label for t in chart.y_ticks) == labels


def test_minute_chart_fills_missing_minutes_and_counts() -> None:
    end = datetime(2024, 5, 1, 12, 59, 30, tzinfo=UTC)
    start = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    rows = [
        {"minute": start, "deliveries": 4, "failures": 1},
        {"minute": start + timedelta(minutes=30), "deliveries": 9, "failures": 0},
        {"minute": start - timedelta(minutes=1), "deliveries": 100, "failures": 100},
    ]
    chart = minute_chart(rows, end=end, minutes=60, tick_minutes=10, title="last hour")
    assert (chart.deliveries, chart.failures, chart.peak) == (13, 1, 9)
    assert [t.label for t in chart.x_ticks] == [
        "12:00",
        "12:10",
        "12:20",
        "12:30",
        "12:40",
        "12:50",
    ]
    assert [t.label for t in chart.y_ticks] == ["0", "2", "4", "6", "8", "10"]
    assert chart.deliveries_path.startswith(f"M{LEFT} {HEIGHT - BOTTOM} L{LEFT} ")
    assert chart.deliveries_path.endswith("Z")
    assert chart.failures_path.count("L") == 59
    assert set(chart.deliveries_path) <= set("0123456789.MLZ ")
