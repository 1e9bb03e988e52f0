"""A three-node RabbitMQ cluster of the tests' own, and the roles running on it.

The cluster lives for the module; each test gets its own namespace on it and the session's
database. Whatever a test leaves on the cluster goes with the cluster's data folders."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from webhook_router.settings import Settings

from ..support.rabbit_cluster import RabbitCluster, rabbit_cluster, unavailable_reason

# A node that stops answering without closing its sockets (a hung or unreachable machine)
# is taken for down after `net_ticktime` seconds (default 60); until then the other nodes
# complete no new client connection, so clients cannot fail over sooner.
CLUSTER_CONFIG = ("net_ticktime = 10",)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RabbitCluster]:
    """Three clustered nodes; `cluster.urls` are their AMQP URLs, first node first."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with rabbit_cluster(3, CLUSTER_CONFIG) as running:
        yield running
    leftover = running.leftover_processes()
    assert not leftover, f"cluster processes still running after teardown: {leftover}"


@pytest.fixture(autouse=True)
def whole_cluster(cluster: RabbitCluster) -> Iterator[None]:
    """After each test, the nodes it lost back in the cluster, even when it failed before
    bringing them back itself: the next test needs every node for its quorum."""
    yield
    cluster.heal()


@pytest.fixture
def cluster_settings(settings: Settings, cluster: RabbitCluster) -> Settings:
    """The session's settings on the cluster, every node listed, with a namespace of the
    test's own."""
    return settings.model_copy(
        update={"amqp_url": cluster.urls, "namespace": f"wrtest_{uuid.uuid4().hex[:8]}"}
    )
