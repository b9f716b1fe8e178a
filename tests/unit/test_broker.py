"""xcombus broker's start-up checks that need no Kafka."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from xcombus.broker import LocalBroker
from xcombus.errors import XComBrokerError

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("taken", ["client", "controller"])
def test_a_port_someone_else_answers_on_is_refused_before_anything_starts(tmp_path: Path, taken: str) -> None:
    """A stale broker (or any server) on the port would pass the readiness probe for ours:
    start refuses at once, naming the port, and launches nothing."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        broker = LocalBroker(tmp_path / "home", port=port if taken == "client" else port - 1)
        with pytest.raises(XComBrokerError, match=f"port {port} on 127.0.0.1 is already in use"):
            broker.start(timeout=5)
    assert broker.pid() is None
    assert not (tmp_path / "home" / "server.properties").exists()
