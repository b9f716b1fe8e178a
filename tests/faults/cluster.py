"""Brokers only the fault tests need: a multi-node KRaft cluster and a SASL/PLAIN broker.

Both are :class:`xcombus.broker.LocalBroker` with another configuration (its public hooks):
they start, wait and stop through the same readiness and stop loops as ``xcombus broker``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import ClassVar

from xcombus.broker import KAFKA_VERSION, LocalBroker, new_cluster_id
from xcombus.errors import XComConfigError

# One node (broker and controller) of a LocalCluster: a static controller quorum, topics
# replicated to three nodes and writes refused below two in-sync replicas.
CLUSTER_PROPERTIES = """# Written by the xcombus tests: node {node_id} of a {nodes}-node KRaft cluster on loopback.
process.roles=broker,controller
node.id={node_id}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.quorum.voters={voters}
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
num.partitions=1
auto.create.topics.enable=false
default.replication.factor={replicas}
min.insync.replicas={min_isr}
unclean.leader.election.enable=false
offsets.topic.replication.factor={replicas}
offsets.topic.num.partitions=5
transaction.state.log.replication.factor={replicas}
transaction.state.log.min.isr={min_isr}
share.coordinator.state.topic.replication.factor={replicas}
share.coordinator.state.topic.min.isr={min_isr}
group.initial.rebalance.delay.ms=0
"""

# SASL/PLAIN on the client listener. The broker talks to itself as the first user.
SASL_PROPERTIES = """sasl.enabled.mechanisms=PLAIN
sasl.mechanism.inter.broker.protocol=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=\
  org.apache.kafka.common.security.plain.PlainLoginModule required \
  username="{user}" password="{password}" {users};
"""


class SaslBroker(LocalBroker):
    """A single local broker whose client listener is SASL_PLAINTEXT with PLAIN."""

    listener_protocol: ClassVar[str] = "SASL_PLAINTEXT"

    def __init__(self, home: str | os.PathLike[str], *, port: int, sasl_users: dict[str, str]) -> None:
        super().__init__(home, port=port)
        if not sasl_users:
            raise XComConfigError("a SASL broker needs at least one user")
        for user, password in sasl_users.items():
            if not user.isidentifier() or '"' in password or "\\" in password:
                raise XComConfigError(f"SASL user {user!r}: use an identifier and a password without quotes")
        #: user -> password; the first user is the broker's own.
        self.sasl_users = dict(sasl_users)

    def server_properties(self) -> str:
        user, password = next(iter(self.sasl_users.items()))
        users = " ".join(f'user_{u}="{p}"' for u, p in self.sasl_users.items())
        return super().server_properties() + SASL_PROPERTIES.format(user=user, password=password, users=users)

    def client_options(self) -> dict[str, str]:
        user, password = next(iter(self.sasl_users.items()))
        return {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
                "sasl_plain_username": user, "sasl_plain_password": password}


class ClusterNode(LocalBroker):
    """One broker+controller of a :class:`LocalCluster` (its own home, ports and node id)."""

    jvm_memory: ClassVar[tuple[str, ...]] = ("-Xmx512m", "-Xms128m")

    def __init__(self, home: Path, *, port: int, node_id: int, cluster: LocalCluster) -> None:
        super().__init__(home, port=port, kafka_version=cluster.kafka_version)
        self.node_id = node_id
        self.cluster = cluster

    def server_properties(self) -> str:
        nodes = len(self.cluster.nodes)
        replicas = min(nodes, 3)
        return CLUSTER_PROPERTIES.format(
            node_id=self.node_id, nodes=nodes, port=self.port, controller_port=self.controller_port,
            voters=self.cluster.quorum_voters, data=self.home / "data",
            replicas=replicas, min_isr=max(1, replicas - 1))

    def format_args(self) -> list[str]:
        # A static quorum (controller.quorum.voters): no --standalone, one shared cluster id.
        return ["-t", self.cluster.cluster_id]


class LocalCluster:
    """Several local Kafka nodes, each broker and controller, forming one KRaft cluster.

    ``ports`` holds each node's client port P; its controller listens on P+1. Node ``i``
    (0-based) has ``node.id`` i+1 and lives in ``<home>/node-<i+1>``. Topics get three
    replicas and need two in sync to accept writes (``min.insync.replicas=2``); unclean
    leader election is off, so a leader is always a replica that had every acknowledged
    record. :meth:`kill_node` is ``kill -9``.
    """

    def __init__(self, home: str | os.PathLike[str], ports: list[int], *,
                 kafka_version: str = KAFKA_VERSION) -> None:
        if not ports:
            raise XComConfigError("a cluster needs at least one node port")
        taken = {q for p in ports for q in (p, p + 1)}
        if len(taken) != 2 * len(ports):
            raise XComConfigError(f"node ports {ports} overlap (each node uses P and P+1)")
        self.home = Path(home).resolve()
        self.kafka_version = kafka_version
        self.nodes = [ClusterNode(self.home / f"node-{i + 1}", port=port, node_id=i + 1, cluster=self)
                      for i, port in enumerate(ports)]
        id_file = self.home / "cluster.id"
        try:
            self.cluster_id = id_file.read_text().strip()
        except OSError:
            self.cluster_id = new_cluster_id()
            self.home.mkdir(parents=True, exist_ok=True)
            id_file.write_text(self.cluster_id + "\n")

    @property
    def bootstrap_servers(self) -> str:
        """Every node's ``host:port``, comma-separated."""
        return ",".join(node.bootstrap_servers for node in self.nodes)

    @property
    def quorum_voters(self) -> str:
        """``controller.quorum.voters``: every node's id and controller address."""
        return ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)

    def start(self, timeout: float = 120.0) -> list[int]:
        """Start every node not running; return their pids once each node answers a
        metadata request that lists all nodes."""
        self.nodes[0].ensure_jars()
        procs = {i: node.spawn() for i, node in enumerate(self.nodes) if node.pid() is None}
        self._wait_ready(time.monotonic() + timeout, procs)
        return [node.pid() or -1 for node in self.nodes]

    def start_node(self, i: int, timeout: float = 120.0) -> int:
        """(Re)start node ``i``; return its pid once every node answers and lists all nodes."""
        node = self.nodes[i]
        procs = {} if node.pid() is not None else {i: node.spawn()}
        self._wait_ready(time.monotonic() + timeout, procs)
        return node.pid() or -1

    def _wait_ready(self, deadline: float, procs: dict[int, subprocess.Popen[bytes]]) -> None:
        # Every node must answer and list every node: after a kill -9 the others still list
        # the dead one until its session expires.
        for i, node in enumerate(self.nodes):
            node.wait_ready(deadline, procs.get(i), brokers=len(self.nodes))

    def kill_node(self, i: int) -> bool:
        """``kill -9`` node ``i`` (no controlled shutdown); False if it was not running."""
        node = self.nodes[i]
        pid = node.send_signal(signal.SIGKILL)
        if pid is not None:
            node.wait_exited(pid, time.monotonic() + 30)
        node.pid_file.unlink(missing_ok=True)
        return pid is not None

    def stop_node(self, i: int, timeout: float = 60.0) -> bool:
        """Stop node ``i`` cleanly (SIGTERM, SIGKILL after ``timeout``); False if not running."""
        return self.nodes[i].stop(timeout)

    def stop(self, timeout: float = 60.0) -> int:
        """Stop every node: SIGTERM to all at once (so none waits for a quorum that has gone),
        SIGKILL after ``timeout``. Return how many were running."""
        running = [(node, pid) for node in self.nodes if (pid := node.send_signal(signal.SIGTERM)) is not None]
        deadline = time.monotonic() + timeout
        for node, pid in running:
            node.wait_exited(pid, deadline)
        for node in self.nodes:
            node.pid_file.unlink(missing_ok=True)
        return len(running)
