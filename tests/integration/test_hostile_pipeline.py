"""The promise under hostile input, as a property: a seeded generator makes events (NUL,
control characters, huge strings, deep nesting, lone surrogates, far timestamps, keys the
log cannot hold, no id, no timestamp) and endpoint answers (NUL, control characters, bytes
that are not UTF-8, answers in many chunks, huge answers, 4xx, 5xx) and sends them through
the real pipeline among good ones. What must hold:

- every accepted event's jobs (one per webhook) are recorded exactly once, Complete or
  Failed with a summary, and none stays Queued;
- every refused event is dead-lettered by the router with a reason and makes no job;
- no good neighbour is lost;
- each answer leaves what it must: NUL made U+FFFD and said, a run number read from an
  answer in many chunks, a huge one cut and marked `[truncated]`, a 404 Failed.

Bounded: 30 events to 6 webhooks per seed, a few seconds each. The seeds are fixed so a
failure can be replayed; `HOSTILE_SEEDS=1,2,3` runs others."""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiohttp import web

from webhook_router import broker
from webhook_router.catalogue import routing_key
from webhook_router.events import EventInvalid, derived_id, parse_event
from webhook_router.settings import Settings

from ..conftest import eventually
from .conftest import Stack
from .test_delivery import receiver
from .test_direct_handoff import direct_stack

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(90)]

SEEDS = [int(s) for s in os.environ.get("HOSTILE_SEEDS", "11,29").split(",")]
EVENTS = 30
WEBHOOKS = 6
KEY = routing_key("User", "Created")

ANSWERS = ("plain", "raw nul", "escaped nul", "control", "not utf-8", "chunks", "huge", "404")
RETRIED = "503"
"""Answered to a job's first attempt only: retried, then Complete. (Always 503 would open the
endpoint's circuit for its 30 s cooldown, which is for the timing of another test.)"""


def text(rng: random.Random, hostile: bool) -> str:
    """A string value: plain, or with NUL, control characters, wide characters, or huge."""
    if not hostile:
        return "".join(rng.choice("abcdefgh ") for _ in range(rng.randint(1, 20)))
    kind = rng.choice(["nul", "control", "wide", "huge"])
    if kind == "nul":
        return "a\x00b\x00"
    if kind == "control":
        return "".join(chr(rng.randint(0, 31)) for _ in range(30))
    if kind == "wide":
        return "".join(chr(rng.randint(0x10000, 0x10FFFF)) for _ in range(50))
    return "h" * rng.randint(100_000, 300_000)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@dataclass
class Published:
    message_id: str
    raw: bytes
    accepted: bool
    event_id: str | None


def generate(rng: random.Random, space: str, n: int) -> bytes:
    """The raw body of event `n`: good, or hostile in one or more ways."""
    hostile = rng.random() < 0.6
    header: dict[str, Any] = {"type": "User", "action": "Created"}
    if rng.random() < 0.7:
        header["id"] = f"{space}-{n}"
    if rng.random() < 0.6:
        header["timestamp"] = rng.choice(
            [
                "2026-11-20T10:00:00.000Z",
                "9999-12-29T09:59:59-14:00",  # far, still storable
                "9999-12-31T23:59:59-14:00",  # beyond the job log
                "0001-01-01T00:00:00+14:00",  # before it
                "1970-01-01T00:00:00Z",
            ]
            if hostile
            else ["2026-11-20T10:00:00.000Z"]
        )
    username = f"user-{n}"
    if hostile and rng.random() < 0.15:
        username = rng.choice(["nul\x00name", "u" * 300])
    event: dict[str, Any] = {
        "event": header,
        "space": {"slug": space},
        "user": {"username": username, "displayName": text(rng, hostile)},
        "answers": [rng.choice(ANSWERS) for _ in range(WEBHOOKS)],
        "values": {f"k{i}": text(rng, hostile and rng.random() < 0.5) for i in range(3)},
    }
    if rng.random() < 0.1:
        event["answers"][rng.randrange(WEBHOOKS)] = RETRIED
    raw = orjson.dumps(event)
    if hostile and rng.random() < 0.25:
        # spliced in as text: what orjson would not write
        extra = rng.choice(
            [
                nested(rng.choice([50, 200, 300, 1000])),  # 300 and 1000: not re-encodable
                '"\\ud800 lone"',  # a lone surrogate: not JSON the router can read
                '"\\u0000 escaped"',
            ]
        )
        raw = raw[:-1] + b', "extra": ' + extra.encode() + b"}"
    return raw


def accepted(raw: bytes) -> str | None:
    """The event id when the router can route the event, else None."""
    try:
        event = parse_event(raw, default_id=derived_id(raw, KEY))
        event.encode()
    except (EventInvalid, orjson.JSONEncodeError):
        return None
    return event.id


EXPECTED = {
    "plain": ("Complete", "200 OK", "12"),
    "raw nul": ("Complete", "200 OK (answer altered: 2 NUL replaced by U+FFFD)", "13"),
    "escaped nul": ("Complete", "200 OK", "14"),
    "control": ("Complete", "200 OK", None),
    "not utf-8": ("Complete", "200 OK", None),
    "chunks": ("Complete", "200 OK", "16"),
    "huge": ("Complete", "200 OK", None),
    "404": ("Failed", "404 Not Found (answer altered: 1 NUL replaced by U+FFFD)", None),
    RETRIED: ("Complete", "200 OK", "12"),
}
"""What each answer must leave in its job: status, summary and run number."""

SEEN: set[str] = set()


async def answer(request: web.Request) -> web.StreamResponse:
    """Answers as the event asks for this webhook (its path is its index)."""
    event = orjson.loads(await request.read())
    kind = event["answers"][int(request.match_info["tail"])]
    if kind == RETRIED and request.headers["webhook-id"] in SEEN:
        kind = "plain"
    SEEN.add(request.headers["webhook-id"])
    if kind == "plain":
        return web.json_response({"message": "Initiated run #12."})
    if kind == "raw nul":
        return web.Response(body=b'{"message": "Initiated run #13.\x00\x00"}')
    if kind == "escaped nul":
        return web.Response(body=b'{"message": "x\\u0000", "runId": "14"}')
    if kind == "control":
        return web.Response(body=bytes(range(1, 32)) * 10)
    if kind == "not utf-8":
        return web.Response(body=b"\xff\xfe\x80\xc3(\xed\xa0\x80 run #15")
    if kind == "huge":
        return web.Response(body=b"z" * 200_000)
    if kind == "404":
        return web.Response(status=404, body=b"\x00 not here")
    if kind == RETRIED:
        return web.Response(status=503, body=b"busy \x00")
    response = web.StreamResponse()
    await response.prepare(request)
    for piece in [b'{"message": "Initiated ', b"run ", b"#16", b'."}', *[b" "] * 40]:
        await response.write(piece)
        await asyncio.sleep(0)
    await response.write_eof()
    return response


@pytest.mark.parametrize("seed", SEEDS)
async def test_every_accepted_event_is_recorded_once_and_every_refused_one_dead_lettered(
    stack: Stack, seed: int
) -> None:
    await holds_through(stack, seed)


@pytest.mark.parametrize("seed", SEEDS)
async def test_the_same_holds_with_the_direct_handoff_each_message_sent_twice(
    settings: Settings, seed: int
) -> None:
    """One `up`-like stack with WEBHOOK_ROUTER_DIRECT_HANDOFF, every message published twice
    (a publisher's retry): the same promise, and still one job per event and webhook."""
    async with direct_stack(settings) as stack:
        await holds_through(stack, seed, copies=2)


async def holds_through(stack: Stack, seed: int, copies: int = 1) -> None:
    """Send the seed's events (each `copies` times) through `stack` and check the promise."""
    assert stack.router.topology is not None
    rng = random.Random(seed)
    space = stack.space()
    published: list[Published] = []
    async with receiver(answer) as url:
        for i in range(WEBHOOKS):
            await stack.webhook(space, type="User", event="Created", url=f"{url}/{i}")
        for n in range(EVENTS):
            raw = generate(rng, space, n)
            event_id = accepted(raw)
            message_id = f"{space}-message-{n}"
            for _ in range(copies):
                await broker.publish(stack.router.topology.events, raw, KEY, message_id=message_id)
            published.append(Published(message_id, raw, event_id is not None, event_id))
        good = [p for p in published if p.accepted]
        refused = [p for p in published if not p.accepted]
        assert good and refused, f"seed {seed} made no mix of accepted and refused events"
        rows = await stack.settled(space, WEBHOOKS * len(good), timeout=60)
        await asyncio.sleep(0.5)  # anything more would show now
        rows = await stack.jobs(space)

    context = f"seed {seed}"
    by_event: dict[str, list[Any]] = {}
    for r in rows:
        by_event.setdefault(r["event_id"], []).append(r)
    assert sorted(by_event) == sorted(p.event_id for p in good if p.event_id), context
    for p in good:
        jobs = by_event[p.event_id or ""]
        assert len(jobs) == WEBHOOKS, f"{context}: event {p.message_id} has {len(jobs)} jobs"
        assert len({j["webhook_id"] for j in jobs}) == WEBHOOKS, context
        assert len({j["id"] for j in jobs}) == WEBHOOKS, context
    for r in rows:
        assert r["status"] in ("Complete", "Failed"), f"{context}: {r['id']} is {r['status']}"
        assert r["summary"], f"{context}: job {r['id']} has no summary"
        # and each answer is recorded as the endpoint gave it, made storable
        kind = orjson.loads(r["request_content"])["answers"][int(r["url"].rsplit("/", 1)[1])]
        expected = EXPECTED[kind]
        where = f"{context}: job {r['id']} answered {kind!r}"
        assert (r["status"], r["summary"], r["run_id"]) == expected, where
        assert "\x00" not in (r["response_content"] or ""), where
        if kind == "huge":
            assert r["response_content"].endswith("\n[truncated]"), where
    assert await eventually(lambda: _refused_in_dead(stack, refused), timeout=15), context


async def _refused_in_dead(stack: Stack, refused: list[Published]) -> bool:
    """Whether every refused event is a stored dead letter (the recorder moves the
    dead-letter queue into the dead_letters table), from the router, with a reason."""
    wanted = {p.message_id for p in refused}
    rows = await stack.store.pool.fetch(
        "SELECT message_id, role, reason FROM dead_letters WHERE message_id = ANY($1)",
        list(wanted),
    )
    for row in rows:
        assert row["role"] == "router" and row["reason"], dict(row)
    return {r["message_id"] for r in rows} == wanted
