"""The docs say what runs: each claim below is read from the doc and compared with what the
running stack (real router, worker, recorder, API, broker and database) does."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from webhook_router.jobs import Status
from webhook_router.settings import Settings
from webhook_router.topology import Names, delay_name

from ..conftest import TEST_SCHEDULE
from .conftest import Stack

pytestmark = pytest.mark.timeout(120)
on_the_stack = pytest.mark.asyncio(loop_scope="session")

DOCS = Path(__file__).resolve().parents[2] / "docs"


def router_failure_attempts() -> int:
    """`attempts = N` in jobs.md's sentence on a job the router could not send."""
    text = " ".join((DOCS / "jobs.md").read_text().split())
    sentence = r"If the webhook's URL or filter fails for this event, .*?`attempts = (\d+)`"
    found = re.findall(sentence, text)
    assert len(found) == 1, "jobs.md no longer says how many attempts such a job has"
    return int(found[0])


@on_the_stack
async def test_jobs_md_gives_the_attempts_of_a_job_the_router_could_not_send(
    stack: Stack,
) -> None:
    space = stack.space()
    await stack.webhook(
        space, type="User", event="Created", url="https://${values('Host')}/hook", name="broken"
    )
    await stack.publisher.publish(
        {
            "event": {"type": "User", "action": "Created"},
            "space": {"slug": space},
            "user": {"username": "sam@example.com"},
        }
    )
    [job] = await stack.settled(space, 1, statuses=(Status.FAILED,))
    assert "url failed" in job["summary"]
    attempts = await stack.store.job_attempts(str(job["id"]))
    assert attempts == []  # never sent: no attempt row
    assert job["attempts"] == router_failure_attempts() == 0
    assert job["retry_count"] == 0


def doc_queue_names(doc: str, namespace: str, shards: int) -> set[str]:
    """The queue names a doc lists as `{namespace}.X`, for this namespace and shard count."""
    listed = set(re.findall(r"`\{namespace\}\.([a-z0-9.{}\-N]+)`", (DOCS / doc).read_text()))
    names: set[str] = set()
    for suffix in listed:
        if suffix.startswith("deliver.") and shards == 1:
            continue
        if suffix == "deliver" and shards > 1:
            continue
        if suffix == "deliver.0":
            names.add(f"{namespace}.deliver.0")
        elif suffix == "deliver.{N-1}":
            names.add(f"{namespace}.deliver.{shards - 1}")
        elif suffix in ("retry.{delay}", "retry.{wait}"):
            delays = {*TEST_SCHEDULE, Settings.model_fields["endpoint_wait"].default}
            names |= {f"{namespace}.retry.{delay_name(s)}" for s in delays}
        else:
            names.add(f"{namespace}.{suffix}")
    return names


async def queue_labels(api_url: str) -> set[str]:
    headers = {"Authorization": "Bearer test-token"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(api_url + "/metrics", headers=headers) as answer,
    ):
        assert answer.status == 200
        text = await answer.text()
    return {
        sample.labels["queue"]
        for family in text_string_to_metric_families(text)
        if family.name == "webhook_router_queue_messages"
        for sample in family.samples
    }


@on_the_stack
@pytest.mark.parametrize("doc", ["api.md", "operations.md"])
async def test_the_queue_labels_in_the_docs_are_the_metrics(stack: Stack, doc: str) -> None:
    namespace = stack.settings.namespace
    labels = await queue_labels(stack.api_url)
    assert labels == doc_queue_names(doc, namespace, 1)
    assert f"{namespace}.router" in labels  # the full name, namespace first


@pytest.mark.parametrize("doc", ["api.md", "operations.md"])
def test_the_sharded_delivery_queues_in_the_docs_are_the_topology(doc: str) -> None:
    shards = 4
    names = Names("ns", shards)
    listed = {n for n in doc_queue_names(doc, "ns", shards) if ".deliver" in n}
    assert listed == {names.deliver_queues()[0], names.deliver_queues()[-1]}
