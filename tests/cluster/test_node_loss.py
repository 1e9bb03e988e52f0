"""Losing a RabbitMQ node under load: the leader of a work queue goes away in the middle of
a few thousand events; deliveries go on without it, then it comes back. Every event still
makes exactly one job, recorded Complete, and every POST arrives at least once.

- the delivery queue's leader is stopped whole (`rabbitmqctl stop`); the roles and
  publishers connected to it fail over to another node while a new leader is elected
  (clients start at a random node of their list, so the stack is opened again until at
  least one role is on the leader: failover is exercised every run);
- the router queue's leader is killed (SIGKILL) on a node no client is given, so only the
  leader changes, under channels that stay open;
- the delivery queue's leader hangs (SIGSTOP) under the clients connected to it (again
  at least one role): with a heartbeat (5 s unless the URL says otherwise) they drop it
  as stuck and fail over while it still hangs;
  then it is restarted, as a supervisor would, and rejoins.

Before the load, each run waits until a member of the queue to lose runs on every node (so
that the loss leaves a quorum: otherwise it says so instead of failing for want of one);
after it, the cluster's fixture brings back any node a failed run left down. Each run
asserts which roles were on the lost node, that those moved to a live node, and
that the longest stall of deliveries stays under the time the node took to go down plus
the case's resumption bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import pytest

from webhook_router.events import Event, parse_event
from webhook_router.publisher import Publisher
from webhook_router.settings import Settings
from webhook_router.topology import Names, declare_ingress

from ..conftest import eventually
from ..integration.conftest import Stack, event_for, open_stack
from ..support.rabbit_cluster import Node, RabbitCluster

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(600)]

EVENTS = 2000
RATE = 100.0
SENDERS = 8
HEARTBEAT = 5
RESUMED = 50
RUN_TREE = "/app/api/v1/run-tree/Kinetic%20Request%20CE/Users/Created"


def user_created(space: str, n: int) -> Event:
    """An event with its id set once, so publishing it again can never make a second job."""
    return parse_event(event_for(space, "User", "Created", user={"username": f"user-{n}"}))


async def publish_paced(settings: Settings, events: list[Event], rate: float) -> int:
    """Publish like platform services, several at once, at most `rate` events a second in
    all: each event again until the broker confirms it. How many publishes were repeated."""

    async def service(share: list[Event]) -> int:
        publisher = Publisher(settings.amqp_url, settings.namespace)
        await publisher.open()
        started = time.monotonic()
        repeated = 0
        try:
            for n, event in enumerate(share):
                await asyncio.sleep(max(0.0, started + n * SENDERS / rate - time.monotonic()))
                deadline = time.monotonic() + 120
                while True:
                    try:
                        await asyncio.wait_for(publisher.publish(event), 10)
                        break
                    except (Exception, asyncio.CancelledError):
                        if _cancelled():
                            raise
                        repeated += 1
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.1)
                        if not publisher.connected:
                            await publisher.close()
                            with contextlib.suppress(Exception):
                                await publisher.open()
        finally:
            await publisher.close()
        return repeated

    shares = [events[i::SENDERS] for i in range(SENDERS)]
    return sum(await asyncio.gather(*(service(share) for share in shares)))


def _cancelled() -> bool:
    """Whether this task is being cancelled, rather than handed a CancelledError by a
    connection the client dropped as stuck (aiormq fails pending confirms with it)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


@dataclass
class Arrivals:
    """When POSTs reached the engine, sampled every few milliseconds."""

    count: Callable[[], int]
    samples: list[tuple[float, int]] = field(default_factory=list)

    async def watch(self) -> None:
        while True:
            self.samples.append((time.monotonic(), self.count()))
            await asyncio.sleep(0.01)

    def longest_stall(self, since: float) -> float:
        """The longest time without a new POST after `since`, up to the last POST."""
        last_time, last_count = None, None
        longest = 0.0
        for at, count in self.samples:
            if at < since:
                last_time, last_count = at, count
                continue
            if last_time is None or last_count is None:
                last_time, last_count = at, count
            if count > last_count:
                longest = max(longest, at - last_time)
                last_time, last_count = at, count
        return longest

    def last_post(self) -> float:
        """When the last POST was seen."""
        final = self.samples[-1][1]
        return next(at for at, count in self.samples if count == final)

    async def more_after(self, moment: float, more: int, timeout: float) -> None:
        """Wait until `more` POSTs arrived after `moment`."""
        deadline = time.monotonic() + timeout
        before = self.count_at(moment)
        while self.count() - before < more:
            assert time.monotonic() < deadline, (
                f"{self.count() - before} POSTs in {timeout:g}s after the node was lost "
                f"(of {EVENTS}, {before} before)"
            )
            await asyncio.sleep(0.05)

    def count_at(self, moment: float) -> int:
        before = [count for at, count in self.samples if at <= moment]
        return before[-1] if before else 0


PLACEMENT_TRIES = 10
"""Stacks opened before one has a role on the leader: each role starts at a random node of
three, so all miss it with a chance of (2/3)**3 each time."""


def roles_on(stack: Stack, node: Node) -> list[Any]:
    """The roles whose broker connection is on the node."""
    roles: list[Any] = [stack.recorder, stack.router, stack.worker]
    return [role for role in roles if role.connection.url.port == node.port]


@asynccontextmanager
async def stack_on_leader(
    cluster: RabbitCluster, settings: Settings, queue: str, figures: list[tuple[str, object]]
) -> AsyncIterator[tuple[Stack, str]]:
    """A stack with at least one role connected to the leader of `queue`, and that leader;
    opened again (same namespace, the queues stay where they lead) until it is so."""
    placements = []
    for opened in range(1, PLACEMENT_TRIES + 1):
        async with open_stack(settings) as stack:
            leader = await asyncio.to_thread(cluster.leader_of, queue)
            if roles_on(stack, cluster.node(leader)):
                figures.append(("stacks_opened", opened))
                yield stack, leader
                return
            placements.append([r.connection.url.port for r in roles_on_all(stack)])
    raise AssertionError(f"no role on the leader in {PLACEMENT_TRIES} stacks: {placements}")


def roles_on_all(stack: Stack) -> list[Any]:
    return [stack.recorder, stack.router, stack.worker]


async def members_everywhere(cluster: RabbitCluster, queue: str) -> None:
    """Wait until a member of `queue` runs on every node, so that losing any one node
    leaves it a quorum; fail saying so when it does not come to that."""
    every = sorted(n.name for n in cluster.nodes)

    async def everywhere() -> bool:
        return await asyncio.to_thread(cluster.online_members, queue) == every

    if not await eventually(everywhere, timeout=30):
        online = await asyncio.to_thread(cluster.online_members, queue)
        raise AssertionError(
            f"{queue} runs members on {online} of {every}: losing a node would not test "
            "failover but a queue without a quorum"
        )


async def run_with_node_loss(
    stack: Stack,
    cluster: RabbitCluster,
    lose: Callable[[str], None],
    bring_back: Callable[[str], None],
    queue: str,
    leader: str,
    figures: list[tuple[str, object]],
    *,
    resume_within: float = 30.0,
    roles_on_leader: bool = True,
) -> None:
    """Publish the events, `lose` the leader of `queue` once a fifth of them were
    delivered, wait until deliveries go on without it and the roles that were on it moved
    to a live node, then `bring_back` it while the load goes on; check every job and POST,
    the roles' failover and the longest stall, and add what was measured to `figures`."""
    await members_everywhere(cluster, queue)
    space = stack.space()
    await stack.webhook(space, type="User", event="Created", url=RUN_TREE)
    events = [user_created(space, n) for n in range(EVENTS)]
    arrivals = Arrivals(lambda: len(stack.engine.received))
    watching = asyncio.create_task(arrivals.watch())
    started = time.monotonic()
    publishing = asyncio.create_task(publish_paced(stack.settings, events, RATE))
    published: list[float] = []
    publishing.add_done_callback(lambda _: published.append(time.monotonic()))
    try:

        async def under_way() -> bool:
            return len(stack.engine.received) >= EVENTS // 5

        deadline = time.monotonic() + 60
        while not await under_way():
            assert time.monotonic() < deadline, "the load never got under way"
            assert not publishing.done(), publishing
            await asyncio.sleep(0.05)

        lost = cluster.node(leader)
        on_lost = roles_on(stack, lost)
        connected = len(on_lost)
        if roles_on_leader:
            assert on_lost, "no role on the node to lose: failover would not be exercised"
        else:
            assert not on_lost, "a role is on the node whose leader alone should change"
        assert not publishing.done(), "the events were all published before the node loss"
        loss_at = time.monotonic()
        await asyncio.to_thread(lose, leader)
        down_at = time.monotonic()
        await arrivals.more_after(down_at, RESUMED, resume_within)

        async def moved() -> bool:
            return all(r.ready() and r.connection.url.port != lost.port for r in on_lost)

        failed_over = await eventually(moved, timeout=resume_within)
        resumed_at = time.monotonic()
        assert failed_over, (
            f"roles on the lost node not connected elsewhere {resume_within:g}s after: "
            f"{[(r.name, r.connection.url.port, r.ready()) for r in on_lost]}"
        )
        returning = asyncio.create_task(asyncio.to_thread(bring_back, leader))
        returned: list[float] = []
        returning.add_done_callback(lambda _: returned.append(time.monotonic()))
        repeated = await asyncio.wait_for(publishing, 300)
        await stack.settled(space, EVENTS, timeout=300)
        settled_at = time.monotonic()
        await asyncio.wait_for(returning, 300)
        rows = await stack.jobs(space)
    finally:
        watching.cancel()
        if not publishing.done():
            publishing.cancel()

    assert len(rows) == EVENTS
    assert {r["status"] for r in rows} == {"Complete"}
    assert {r["event_id"] for r in rows} == {e.id for e in events}
    users = {p.json()["user"]["username"] for p in stack.received_for(space)}
    assert users == {f"user-{n}" for n in range(EVENTS)}

    stall = arrivals.longest_stall(loss_at)
    stall_bound = (down_at - loss_at) + resume_within
    assert stall < stall_bound, (
        f"deliveries stalled {stall:.1f}s: over the {down_at - loss_at:.1f}s the node took "
        f"to go down plus this case's resumption bound, {resume_within:g}s"
    )
    figures.extend(
        [
            ("roles_connected_to_lost_node", connected),
            ("delivered_before_loss", arrivals.count_at(loss_at)),
            ("node_down_seconds", round(down_at - loss_at, 2)),
            ("resumed_seconds", round(resumed_at - loss_at, 2)),
            ("longest_stall_seconds", round(stall, 2)),
            ("node_back_seconds", round(returned[0] - loss_at, 2)),
            ("publishes_repeated", repeated),
            ("posts", len(stack.received_for(space))),
            ("published_seconds", round(published[0] - started, 2)),
            ("delivered_seconds", round(arrivals.last_post() - started, 2)),
            ("recorded_seconds", round(settled_at - started, 2)),
        ]
    )


async def test_losing_the_delivery_queue_leader_loses_no_job(
    cluster: RabbitCluster,
    cluster_settings: Settings,
    request: pytest.FixtureRequest,
) -> None:
    queue = Names(cluster_settings.namespace).deliver
    figures = request.node.user_properties
    async with stack_on_leader(cluster, cluster_settings, queue, figures) as (stack, leader):
        await run_with_node_loss(
            stack,
            cluster,
            cluster.stop_node,
            cluster.start_node,
            queue,
            leader,
            request.node.user_properties,
        )


async def test_losing_the_router_queue_leader_loses_no_job(
    cluster: RabbitCluster,
    cluster_settings: Settings,
    request: pytest.FixtureRequest,
) -> None:
    # the router queue is declared through one node, so it leads there, and every client
    # is given only the other nodes
    seat = cluster.nodes[1]
    connection = await aio_pika.connect(seat.url)
    async with connection:
        await declare_ingress(await connection.channel(), Names(cluster_settings.namespace))
    others = [url for url in cluster.urls if url != seat.url]
    async with open_stack(cluster_settings.model_copy(update={"amqp_url": others})) as stack:
        queue = Names(cluster_settings.namespace).router
        leader = await asyncio.to_thread(cluster.leader_of, queue)
        assert leader == seat.name
        await run_with_node_loss(
            stack,
            cluster,
            cluster.kill_node,
            cluster.start_node,
            queue,
            leader,
            request.node.user_properties,
            roles_on_leader=False,
        )


async def test_clients_leave_a_hung_delivery_queue_leader_before_it_comes_back(
    cluster: RabbitCluster,
    cluster_settings: Settings,
    request: pytest.FixtureRequest,
) -> None:
    # a hung node closes no socket: clients notice only by missed heartbeats
    urls = [f"{url}?heartbeat={HEARTBEAT}" for url in cluster.urls]
    settings = cluster_settings.model_copy(update={"amqp_url": urls})
    queue = Names(settings.namespace).deliver
    figures = request.node.user_properties
    async with stack_on_leader(cluster, settings, queue, figures) as (stack, leader):
        await run_with_node_loss(
            stack,
            cluster,
            cluster.freeze_node,
            cluster.restart_node,
            queue,
            leader,
            request.node.user_properties,
            resume_within=45.0,
        )
