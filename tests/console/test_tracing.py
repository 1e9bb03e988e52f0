"""What the console shows of tracing, with plain HTTP: a job's trace id linked to the trace
viewer, and a webhook's trace context switch."""

from __future__ import annotations

import pytest

from tests.integration.test_store_queries import hook, record
from webhook_router.jobs import Status

from .conftest import TRACE_URL_TEMPLATE, Client, Console
from .test_webhooks import form

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


async def test_a_job_links_its_trace_and_an_untraced_one_says_none(console: Console) -> None:
    store = console.stack.store
    space = console.stack.space()
    webhook = await hook(store, space, "traced")
    traced = await record(
        store,
        webhook,
        status=Status.COMPLETE,
        trace={"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"},
    )
    untraced = await record(store, webhook, status=Status.COMPLETE)
    async with Client(console) as client:
        await client.login()
        _, html, _ = await client.get(f"spaces/{space}/jobs/{traced}")
        link = TRACE_URL_TEMPLATE.replace("{trace}", TRACE)
        assert f'<dd id="job-trace"><a href="{link}"><code>{TRACE}</code></a></dd>' in html
        _, html, _ = await client.get(f"spaces/{space}/jobs/{untraced}")
        assert '<dd id="job-trace">—</dd>' in html


async def test_the_trace_context_checkbox_is_the_webhooks_switch(console: Console) -> None:
    store = console.stack.store
    space = console.stack.space()
    async with Client(console) as client:
        await client.login()
        _, html, _ = await client.get(f"spaces/{space}/webhooks/new")
        assert 'id="traceContext" name="traceContext" checked' in html, "on for a new one"
        status, _, _ = await client.post(f"spaces/{space}/webhooks", data=form(client))
        assert status == 303
        created = await store.get_webhook(space, None, "User Created")
        assert created is not None and created.trace_context is False
        _, html, _ = await client.get(f"spaces/{space}/webhooks/{created.id}")
        assert 'name="traceContext">' in html and 'name="traceContext" checked' not in html
        status, _, _ = await client.post(
            f"spaces/{space}/webhooks/{created.id}", data=form(client, traceContext="on")
        )
        assert status == 303
        saved = await store.get_webhook(space, None, "User Created")
        assert saved is not None and saved.trace_context is True
