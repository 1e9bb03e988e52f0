"""Failing endpoints and operator events on the real services, with receivers on 127.0.0.1:
an endpoint answering 410 disables its webhook and an operator webhook on `Webhook
Disabled` receives the event (the webhook in it, never its secret or credentials);
re-enabling through the API clears the reason and announces `Webhook Enabled`; an operator
event never triggers the webhook it is about; a webhook whose jobs have all failed for
WEBHOOK_ROUTER_DISABLE_AFTER (short here) is disabled, one that succeeded meanwhile is not;
the meta API lists the operator events only when asked for extensions; a dead letter is
announced as `Webhook Dead Lettered`, but not one of a delivery of an operator event."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from aiohttp import web

from webhook_router.operator_events import DISABLED, operator_event
from webhook_router.settings import Settings

from ..conftest import drop_namespace, eventually
from .conftest import Stack, answer_app, event_for, open_stack

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(90)]


def hooks(space: str) -> str:
    return f"/app/api/v1/spaces/{space}/webhooks"


def user_created(space: str, n: int = 0) -> dict[str, Any]:
    return event_for(space, "User", "Created", user={"username": f"user-{n}"})


class Receiver:
    """Answers each POST with the next status of `statuses` (the last one repeated) and
    keeps the bodies it got."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses) or [200]
        self.bodies: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(orjson.loads(await request.read()))
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return web.json_response({}, status=status)


@asynccontextmanager
async def receiving(*receivers: Receiver) -> AsyncIterator[list[str]]:
    started = [await answer_app(r.handle) for r in receivers]
    try:
        yield [url for _, url in started]
    finally:
        for runner, _ in started:
            await runner.cleanup()


async def create(stack: Stack, space: str, **fields: Any) -> dict[str, Any]:
    status, answer = await stack.api("POST", hooks(space), json=fields)
    assert status == 201, answer
    await stack.synced()
    hook: dict[str, Any] = answer["webhook"]
    return hook


async def test_410_disables_the_webhook_and_an_operator_webhook_hears_of_it(
    stack: Stack,
) -> None:
    space = stack.space()
    gone, operator = Receiver(410), Receiver(200)
    async with receiving(gone, operator) as (gone_url, operator_url):
        hook = await create(
            stack,
            space,
            name="gone",
            type="User",
            event="Created",
            url=gone_url + "/hook",
            authStrategy="Bearer",
            auth={"token": "tok.en-secret"},
        )
        for action in ("Disabled", "Enabled"):
            await create(
                stack,
                space,
                name=f"pager {action}",
                type="Webhook",
                event=action,
                url=operator_url + "/pager",
            )
        await stack.publisher.publish(user_created(space))
        assert await eventually(lambda: _count(operator, 1), timeout=20)
        [body] = operator.bodies
        assert body["event"]["type"] == "Webhook" and body["event"]["action"] == "Disabled"
        assert body["space"] == {"slug": space}
        assert body["webhook"]["id"] == hook["id"]
        assert body["webhook"]["enabled"] is False
        assert "410" in body["webhook"]["disabledReason"]
        text = orjson.dumps(body).decode()
        assert "tok.en-secret" not in text and '"secret"' not in text and '"auth"' not in text

        status, answer = await stack.api("GET", f"{hooks(space)}/gone")
        assert status == 200
        assert answer["webhook"]["enabled"] is False
        assert "410" in answer["webhook"]["disabledReason"]
        trail = await stack.store.audit_log(space)
        [audited] = [e for e in trail if e.actor == "recorder"]
        assert audited.action == "webhook.disabled", audited
        assert audited.after is not None and "410" in audited.after["disabledReason"]
        assert "tok.en-secret" not in repr(audited)

        status, answer = await stack.api("PUT", f"{hooks(space)}/gone", json={"enabled": True})
        assert status == 200, answer
        assert answer["webhook"]["enabled"] is True
        assert answer["webhook"]["disabledReason"] is None
        assert await eventually(lambda: _count(operator, 2), timeout=20)
        enabled = operator.bodies[1]
        assert enabled["event"]["action"] == "Enabled"
        assert enabled["webhook"]["id"] == hook["id"]
        assert enabled["webhook"]["disabledReason"] is None
        # the pagers' own jobs are recorded like any other webhook's
        jobs = await stack.settled(space, 3)
    names = sorted(j["webhook_name"] for j in jobs)
    assert names == ["gone", "pager Disabled", "pager Enabled"]


async def _count(receiver: Receiver, n: int) -> bool:
    return len(receiver.bodies) >= n


async def test_an_operator_event_never_triggers_the_webhook_it_is_about(stack: Stack) -> None:
    space = stack.space()
    heard = Receiver(200)
    async with receiving(heard) as (url,):
        subject = await create(
            stack, space, name="subject", type="Webhook", event="Disabled", url=url + "/subject"
        )
        await create(stack, space, name="other", type="Webhook", event="Disabled", url=url + "/o")
        webhook = await stack.store.get_webhook_by_id(subject["id"])
        assert webhook is not None
        await stack.publisher.publish(operator_event(DISABLED, webhook))
        [job] = await stack.settled(space, 1)
        await asyncio.sleep(1.0)  # room for a job of the subject, were one made
        jobs = await stack.jobs(space)
    assert job["webhook_name"] == "other" and job["status"] == "Complete"
    assert [j["webhook_name"] for j in jobs] == ["other"]
    assert len(heard.bodies) == 1 and heard.bodies[0]["webhook"]["id"] == subject["id"]


async def test_meta_lists_the_operator_events_only_when_asked(stack: Stack) -> None:
    base = "/app/api/v1/meta/webhooks"
    status, plain = await stack.api("GET", f"{base}/events/space")
    assert status == 200 and "Webhook" not in plain["events"]
    status, types = await stack.api("GET", f"{base}/types/space")
    assert status == 200 and "Webhook" not in types["types"]
    status, extended = await stack.api("GET", f"{base}/events/space?extensions=true")
    assert status == 200
    assert extended["events"]["Webhook"] == ["Disabled", "Enabled", "Dead Lettered"]
    assert {k: v for k, v in extended["events"].items() if k != "Webhook"} == plain["events"]
    status, answer = await stack.api("GET", f"{base}/types/space?extensions=maybe")
    assert status == 422 and answer["errors"][0]["field"] == "extensions"


async def test_rate_limit_is_validated_stored_and_shown(stack: Stack) -> None:
    space = stack.space()
    base = {"name": "limited", "type": "User", "event": "Created", "url": "http://127.0.0.1:9/"}
    for bad in (0, -1, "10", True, "fast", 1e12):
        status, answer = await stack.api("POST", hooks(space), json=base | {"rateLimit": bad})
        assert status == 422, (bad, answer)
        assert [e["field"] for e in answer["errors"]] == ["rateLimit"], answer
    hook = await create(stack, space, **base, rateLimit=2.5)
    assert hook["rateLimit"] == 2.5
    status, answer = await stack.api("PUT", f"{hooks(space)}/limited", json={"rateLimit": None})
    assert status == 200 and answer["webhook"]["rateLimit"] is None
    status, answer = await stack.api("GET", f"{hooks(space)}/limited")
    assert answer["webhook"]["rateLimit"] is None


@pytest.mark.timeout(120)
async def test_a_webhook_failing_for_disable_after_is_disabled(settings: Settings) -> None:
    """Ten failures, then the setting's time, then one more failure: disabled. The same,
    but with a success before the last failure: still enabled."""
    own = settings.model_copy(
        update={
            "namespace": f"wrtest_failing_{uuid.uuid4().hex[:8]}",
            "disable_after": "2s",
        }
    )
    space = f"space-{uuid.uuid4().hex[:8]}"
    failing, recovering, operator = Receiver(400), Receiver(*[400] * 10, 200, 400), Receiver()
    try:
        async with (
            receiving(failing, recovering, operator) as (bad_url, mixed_url, operator_url),
            open_stack(own) as stack,
        ):
            made = {}
            for name, url in (("failing", bad_url), ("recovering", mixed_url)):
                made[name] = await stack.store.insert_webhook(
                    space=space,
                    kapp=None,
                    name=name,
                    type="User",
                    event="Created",
                    filter=None,
                    url=url + "/hook",
                    auth_strategy=None,
                )
            await stack.store.insert_webhook(
                space=space,
                kapp=None,
                name="pager",
                type="Webhook",
                event="Disabled",
                filter=None,
                url=operator_url + "/pager",
                auth_strategy=None,
            )
            await stack.synced()
            for n in range(10):
                await stack.publisher.publish(user_created(space, n))
            await stack.settled(space, 20)
            await asyncio.sleep(2.5)
            hooks_now = await stack.store.space_webhooks(space)
            assert all(w.enabled for w in hooks_now), "not disabled before a failure is recorded"
            await stack.publisher.publish(user_created(space, 10))
            await stack.settled(space, 22)
            assert await eventually(lambda: _count(operator, 1), timeout=20)
            await stack.synced()
            await stack.publisher.publish(user_created(space, 11))
            # the recovering webhook's last failure is recorded, and changes nothing
            await stack.settled(space, 24)
            await asyncio.sleep(1.0)
            by_name = {w.name: w for w in await stack.store.space_webhooks(space)}
    finally:
        await drop_namespace(own.amqp_url[0], own.namespace, schedule=own.schedule)
    assert by_name["failing"].enabled is False
    assert by_name["failing"].disabled_reason == (
        "every job failed for 2s or longer (at least 10, no success)"
    )
    assert by_name["recovering"].enabled is True and by_name["recovering"].disabled_reason is None
    assert len(failing.bodies) == 11, "nothing is sent once disabled"
    assert len(recovering.bodies) == 12
    [announced] = operator.bodies
    assert announced["webhook"]["name"] == "failing"
    assert announced["webhook"]["disabledReason"] == by_name["failing"].disabled_reason


async def test_a_disable_whose_announcement_fails_is_not_kept(stack: Stack) -> None:
    space = stack.space()
    hook = await stack.webhook(space, type="User", event="Created", url="/u")
    heard: list[str] = []

    async def broker_away(webhook: Any) -> None:
        raise ConnectionError("broker connection dropped")

    async def announce(webhook: Any) -> None:
        heard.append(webhook.disabled_reason)

    with pytest.raises(ConnectionError):
        await stack.store.disable_webhook(hook.id, "410 Gone", then=broker_away)
    kept = await stack.store.get_webhook_by_id(hook.id)
    assert kept is not None and kept.enabled and kept.disabled_reason is None
    disabled = await stack.store.disable_webhook(hook.id, "410 Gone", then=announce)
    assert disabled is not None and not disabled.enabled and heard == ["410 Gone"]
    assert await stack.store.disable_webhook(hook.id, "410 Gone", then=announce) is None
    assert heard == ["410 Gone"], "announced once"


async def test_a_dead_letter_is_announced_but_never_one_of_an_operator_delivery(
    stack: Stack,
) -> None:
    """A delivery that runs out of retries is dead-lettered and, once stored, announced as
    `Webhook Dead Lettered` with the webhook and the dead letter's id. The delivery of that
    announcement to a pager that fails dies too, but is not announced: two failing pagers
    would otherwise announce each other's dead letters forever."""
    space = stack.space()
    failing, pager, broken = Receiver(503), Receiver(200), Receiver(503)
    async with receiving(failing, pager, broken) as (failing_url, pager_url, broken_url):
        hook = await create(
            stack, space, name="failing", type="User", event="Created", url=failing_url + "/h"
        )
        event = {"type": "Webhook", "event": "Dead Lettered"}
        await create(stack, space, name="pager", url=pager_url + "/pager", **event)
        broken_pager = await create(stack, space, name="broken", url=broken_url + "/p", **event)
        await stack.publisher.publish(user_created(space))
        assert await eventually(lambda: _count(pager, 1), timeout=30)
        [body] = pager.bodies
        assert (body["event"]["type"], body["event"]["action"]) == ("Webhook", "Dead Lettered")
        assert body["webhook"]["id"] == hook["id"] and body["space"] == {"slug": space}
        letter = await stack.store.get_dead_letter(body["deadLetter"]["id"])
        assert letter is not None and letter.webhook_id == hook["id"]
        assert body["deadLetter"]["reason"] == letter.reason

        async def broken_pager_dead() -> object:
            return await stack.store.pool.fetchval(
                "SELECT id FROM dead_letters WHERE webhook_id = $1", broken_pager["id"]
            )

        assert await eventually(broken_pager_dead, timeout=30)
        await asyncio.sleep(1.5)  # an announcement of it would have reached the pager by now
        assert len(pager.bodies) == 1, [b["webhook"]["name"] for b in pager.bodies]
        jobs = await stack.settled(space, 3)
    assert sorted((j["webhook_name"], j["status"]) for j in jobs) == [
        ("broken", "Failed"),
        ("failing", "Failed"),
        ("pager", "Complete"),
    ]
