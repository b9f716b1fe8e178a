"""Fixtures for the fault suite: brokers and clusters of its own (to restart, to kill, to
secure), stopped at the end of each test whatever the test did to them. Soak sizes live in
tests/faults/workload.py (``SOAK``)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.cluster import LocalCluster, SaslBroker
from xcombus.broker import LocalBroker


def free_port_pair() -> int:
    """A port P with P+1 also free (the broker's controller listens on P+1)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 65000:
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port pair")


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Callable[..., LocalBroker]]:
    """Start brokers private to one test (so it may stop, restart or secure them); with
    ``sasl_users`` (user -> password) the client listener is SASL_PLAINTEXT with PLAIN."""
    started: list[LocalBroker] = []

    def start(*, sasl_users: dict[str, str] | None = None) -> LocalBroker:
        home, port = tmp_path / f"broker{len(started)}", free_port_pair()
        broker = (SaslBroker(home, port=port, sasl_users=sasl_users) if sasl_users
                  else LocalBroker(home, port=port))
        started.append(broker)
        broker.start()
        return broker

    yield start
    for broker in started:
        broker.stop()


# -- a multi-node cluster (scenario 3) ------------------------------------------------------
def free_port_pairs(n: int) -> list[int]:
    """``n`` ports P, each with P+1 free, no two pairs overlapping (a cluster's nodes)."""
    ports: list[int] = []
    while len(ports) < n:
        port = free_port_pair()
        if all(abs(port - other) > 1 for other in ports):
            ports.append(port)
    return ports


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[Callable[..., LocalCluster]]:
    """Start a local multi-node KRaft cluster private to one test; every node is stopped at
    the end, whatever the test did to them (kill -9 included) and even if start() failed."""
    started: list[LocalCluster] = []

    def start(nodes: int = 3) -> LocalCluster:
        cluster = LocalCluster(tmp_path / f"cluster{len(started)}", free_port_pairs(nodes))
        started.append(cluster)
        cluster.start()
        return cluster

    yield start
    for cluster in started:
        cluster.stop()
