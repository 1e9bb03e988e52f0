"""A RabbitMQ cluster of the tests' own: three nodes on this machine, each with its own
node name, AMQP and distribution ports on 127.0.0.1 and its own data folders, so losing
one of them touches neither the machine's default broker nor anyone else's.

Nodes run as the `rabbitmq` user (the packaged scripts switch to it when run as root) and
share that user's Erlang cookie. Every call blocks: async tests run them in a thread so
the roles in the test process keep working while a node stops or starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# the default broker's ports, and the range its CLI tools listen on while they run
RESERVED_PORTS = frozenset({4369, 5672, 25672, *range(35672, 35683)})
CLI_TIMEOUT = 120.0


class ClusterError(RuntimeError):
    """A node command failed, or a node did not boot or join in time (with its log's tail)."""


def unavailable_reason() -> str | None:
    """Why this machine cannot run a cluster of the tests' own, or None if it can."""
    if shutil.which("rabbitmq-server") is None or shutil.which("rabbitmqctl") is None:
        return "no RabbitMQ server installed (rabbitmq-server, rabbitmqctl)"
    try:
        rabbitmq = pwd.getpwnam("rabbitmq")
    except KeyError:
        return "no `rabbitmq` user to run nodes as"
    if os.geteuid() not in (0, rabbitmq.pw_uid):
        return "RabbitMQ nodes can only be started as root or as the `rabbitmq` user"
    return None


def free_ports(count: int) -> list[int]:
    """Distinct free ports on 127.0.0.1, none of the default broker's."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in RESERVED_PORTS and port not in ports:
            ports.append(port)
    return ports


@dataclass(frozen=True)
class Node:
    name: str
    port: int
    dist_port: int
    base: Path

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def pid_file(self) -> Path:
        return self.base / "node.pid"

    @property
    def log_file(self) -> Path:
        return self.base / "log" / f"{self.name}.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_PID_FILE=str(self.pid_file),
            RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            # not the machine's rabbitmq-env.conf: it names the default node
            RABBITMQ_CONF_ENV_FILE=str(self.base / "rabbitmq-env.conf"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        return env

    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _alive(pid: int) -> bool:
    """Whether a process runs (a zombie waiting to be reaped does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _chown_to_rabbitmq(path: Path) -> None:
    if os.geteuid() != 0:
        return
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            shutil.chown(name, "rabbitmq", "rabbitmq")


class RabbitCluster:
    """Three (or `size`) clustered nodes named `wrtest-{run}-{a,b,c}@localhost`.

    A stopped node is stopped whole (`rabbitmqctl stop`, the VM exits): its clients'
    connections close and the other nodes see it leave the cluster, as when a node's
    pod is deleted. `stop_app` would keep the VM in the cluster's distribution, which is
    not a node loss. A killed node (SIGKILL) goes without any goodbye, as on a crash; a
    frozen one (SIGSTOP) keeps its sockets open and answers nothing, as a hung or
    unreachable machine: only heartbeats and the cluster's tick time find it out."""

    def __init__(self, size: int = 3, config: Sequence[str] = ()) -> None:
        self.run = uuid.uuid4().hex[:8]
        self.config = list(config)
        self.root = Path(tempfile.mkdtemp(prefix=f"wrtest-rabbit-{self.run}-"))
        ports = free_ports(2 * size)
        self.nodes = [
            Node(
                name=f"wrtest-{self.run}-{chr(ord('a') + i)}@localhost",
                port=ports[2 * i],
                dist_port=ports[2 * i + 1],
                base=self.root / chr(ord("a") + i),
            )
            for i in range(size)
        ]
        self.stopped: set[str] = set()
        self.frozen: set[str] = set()

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    # -- commands ---------------------------------------------------------------------

    def ctl(self, node: str, *args: str) -> str:
        """`rabbitmqctl -n NODE ARGS...`; its output."""
        done = subprocess.run(
            ["rabbitmqctl", "-n", node, *args],
            env=self.node(node).env(),
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise ClusterError(
                f"rabbitmqctl -n {node} {' '.join(args)} failed ({done.returncode}): "
                f"{done.stderr.strip() or done.stdout.strip()}"
            )
        return done.stdout

    def _any_running(self) -> str:
        """A node that answers commands: neither stopped nor frozen."""
        for n in self.nodes:
            if n.name not in self.stopped | self.frozen:
                return n.name
        raise ClusterError("every node is stopped or frozen")

    # -- life cycle -------------------------------------------------------------------

    def _write_files(self, node: Node, seed: Node | None) -> None:
        node.base.mkdir(parents=True, exist_ok=True)
        config = [f"listeners.tcp.1 = 127.0.0.1:{node.port}", *self.config]
        if seed is not None:
            # a blank node joins the seed's cluster while it boots: no stop_app/join_cluster
            config += [
                "cluster_formation.peer_discovery_backend = classic_config",
                f"cluster_formation.classic_config.nodes.1 = {seed.name}",
            ]
        (node.base / "rabbitmq.conf").write_text("\n".join(config) + "\n")
        # no plugins: no management or Prometheus listener takes a port
        (node.base / "enabled_plugins").write_text("[].\n")
        (node.base / "rabbitmq-env.conf").write_text("")
        _chown_to_rabbitmq(self.root)

    def _launch(self, node: Node) -> None:
        node.pid_file.unlink(missing_ok=True)
        done = subprocess.run(
            ["rabbitmq-server", "-detached"],
            env=node.env(),
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise ClusterError(f"{node.name} did not launch: {done.stderr.strip()}")

    def _await_boot(self, node: Node) -> None:
        try:
            self.ctl(node.name, "--timeout", str(int(CLI_TIMEOUT)), "wait", str(node.pid_file))
        except (ClusterError, subprocess.TimeoutExpired) as exc:
            raise ClusterError(f"{node.name} did not boot: {exc}\n{node.log_tail()}") from None

    def start(self) -> None:
        """Boot the first node, then the others at once, each joining the first."""
        if os.geteuid() == 0:
            shutil.chown(self.root, "rabbitmq", "rabbitmq")
        seed, *others = self.nodes
        self._write_files(seed, None)
        for n in others:
            self._write_files(n, seed)
        self._launch(seed)
        self._await_boot(seed)
        for n in others:
            self._launch(n)
        with ThreadPoolExecutor(len(others) or 1) as pool:
            list(pool.map(self._await_boot, others))
        self.wait_running(len(self.nodes))

    def running_nodes(self, node: str | None = None) -> list[str]:
        """The running nodes as `node` (by default any node that answers) sees them."""
        status = json.loads(
            self.ctl(node or self._any_running(), "cluster_status", "--formatter", "json")
        )
        return list(status.get("running_nodes", []))

    def wait_running(self, count: int, timeout: float = 60.0) -> list[str]:
        """Wait until every node that is up reports `count` running nodes. Each node's own
        view counts: a quorum queue declared through a node that does not see them all yet
        gets fewer members, and losing one node can then leave it without a quorum."""
        deadline = time.monotonic() + timeout
        while True:
            up = [n.name for n in self.nodes if n.name not in self.stopped | self.frozen]
            try:
                views = [self.running_nodes(name) for name in up]
                running: list[str] | str = views[0] if views else "no node is up"
                if any(len(view) != count for view in views):
                    running = f"as each node sees it: {dict(zip(up, views, strict=True))}"
            except ClusterError as exc:  # a node restarting to heal a partition
                running = str(exc)
            if isinstance(running, list) and len(running) == count:
                return running
            if time.monotonic() > deadline:
                raise ClusterError(f"{count} running nodes expected, cluster reports {running}")
            time.sleep(0.5)

    def stop_node(self, name: str) -> None:
        """Stop a node whole and wait until its VM has exited."""
        node = self.node(name)
        self.ctl(name, "stop", str(node.pid_file))
        self.stopped.add(name)

    def kill_node(self, name: str) -> None:
        """Kill a node's VM at once (SIGKILL), as on a crash: the system still closes its
        sockets, so clients see their connections drop."""
        node = self.node(name)
        pid = node.pid()
        if pid is None:
            raise ClusterError(f"no pid file for {name}")
        os.kill(pid, signal.SIGKILL)
        self.stopped.add(name)
        self.frozen.discard(name)
        if not _wait_gone(pid, 30):
            raise ClusterError(f"{name} (pid {pid}) still runs after SIGKILL")

    def freeze_node(self, name: str) -> None:
        """Suspend a node's VM (SIGSTOP): its sockets stay open but nothing answers, as
        when its machine hangs or drops off the network."""
        pid = self.node(name).pid()
        if pid is None:
            raise ClusterError(f"no pid file for {name}")
        os.kill(pid, signal.SIGSTOP)
        self.frozen.add(name)

    def thaw_node(self, name: str) -> None:
        """Resume a node suspended by `freeze_node`. If the others took it for down
        meanwhile, the cluster is partitioned from then on: see `restart_node`."""
        pid = self.node(name).pid()
        if pid is None:
            raise ClusterError(f"no pid file for {name}")
        os.kill(pid, signal.SIGCONT)
        self.frozen.discard(name)

    def restart_node(self, name: str) -> None:
        """Kill a node, hung or not, and start it again, as a supervisor restarts a node
        that fails its health check; wait until the whole cluster runs."""
        self.kill_node(name)
        self.start_node(name)

    def start_node(self, name: str) -> None:
        """Start a stopped node again and wait until the whole cluster runs."""
        self._boot_again(name)
        self.wait_running(len(self.nodes))

    def _boot_again(self, name: str) -> None:
        node = self.node(name)
        self._launch(node)
        self._await_boot(node)
        self.stopped.discard(name)

    def heal(self) -> None:
        """Bring back every node that is stopped, killed or frozen (a frozen one restarted,
        as a supervisor would), so that a test that failed half way leaves the next one a
        whole cluster."""
        for name in sorted(self.frozen):
            self.kill_node(name)
        for name in sorted(self.stopped):
            self._boot_again(name)
        self.wait_running(len(self.nodes))

    # -- queues -----------------------------------------------------------------------

    def queues(self) -> list[dict[str, Any]]:
        """Each queue's name, type, leader, members and online members."""
        out = self.ctl(
            self._any_running(),
            "list_queues",
            "name",
            "type",
            "leader",
            "members",
            "online",
            "--quiet",
            "--formatter",
            "json",
        )
        return list(json.loads(out or "[]"))

    def online_members(self, queue: str) -> list[str]:
        """The nodes where a member of a quorum queue runs."""
        for q in self.queues():
            if q["name"] == queue:
                return sorted(q["online"])
        raise KeyError(queue)

    def leader_of(self, queue: str) -> str:
        """The node that leads a quorum queue."""
        for q in self.queues():
            if q["name"] == queue:
                return str(q["leader"])
        raise KeyError(queue)

    # -- teardown ---------------------------------------------------------------------

    def remove(self) -> None:
        """Stop every node at once (killing one that does not stop), delete the folders."""
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(self._halt, self.nodes))
        shutil.rmtree(self.root, ignore_errors=True)

    def _halt(self, node: Node) -> None:
        pid = node.pid()
        if pid is None or not _alive(pid):
            return
        os.kill(pid, signal.SIGCONT)
        with contextlib.suppress(ClusterError, subprocess.TimeoutExpired):
            self.ctl(node.name, "stop", str(node.pid_file))
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, 30)

    def leftover_processes(self) -> list[int]:
        """Processes still running with this cluster's node names in their command line."""
        tag = f"wrtest-{self.run}-".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if tag in (entry / "cmdline").read_bytes() and _alive(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:
                continue
        return found


@contextmanager
def rabbit_cluster(size: int = 3, config: Sequence[str] = ()) -> Iterator[RabbitCluster]:
    """A started cluster of `size` nodes, `config` lines added to each node's
    rabbitmq.conf; stopped and removed at the end, test failed or not."""
    cluster = RabbitCluster(size, config)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()
