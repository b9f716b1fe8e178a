"""Security: SASL/PLAIN against a real broker, secrets never shown, no pickle anywhere."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import make_settings
from xcombus import Settings, XComBrokerError, XComBus, XComConfigError
from xcombus.broker import LocalBroker
from xcombus.connection import kafka_options


async def test_sasl_plain_clients_push_materialize_and_pull(own_broker: Callable[..., LocalBroker],
                                                            tmp_path: Path) -> None:
    broker = own_broker(sasl_users={"admin": "admin-secret", "alice": "alice-secret"})
    settings = make_settings(broker.bootstrap_servers, tmp_path, topic_prefix="sec",
                             security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="alice",
                             sasl_password="alice-secret", connect_timeout=5)
    async with XComBus(settings, materialize=True) as bus:
        ti = bus.task_instance("d", "r", "t")
        await ti.xcom_push("k", {"secure": True})
        assert await ti.xcom_pull(task_ids="t", key="k") == {"secure": True}
    wrong = settings.replace(sasl_password="wrong", view_path=str(tmp_path / "w.db"))
    started = time.monotonic()
    with pytest.raises(XComBrokerError):
        async with XComBus(wrong):
            pass
    assert time.monotonic() - started < 5 * 3 + 5
    anonymous = settings.replace(security_protocol="PLAINTEXT", view_path=str(tmp_path / "a.db"))
    with pytest.raises(XComBrokerError):
        async with XComBus(anonymous):
            pass


def test_sasl_settings_pass_through_and_are_validated(tmp_path: Path) -> None:
    s = Settings.from_env({"XCOMBUS_SECURITY_PROTOCOL": "SASL_SSL", "XCOMBUS_SASL_MECHANISM": "SCRAM-SHA-512",
                           "XCOMBUS_SASL_USERNAME": "u", "XCOMBUS_SASL_PASSWORD": "p"})
    options = kafka_options(s)
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "u" and options["sasl_plain_password"] == "p"
    assert options["ssl_context"] is not None
    with pytest.raises(XComConfigError, match="SASL_USERNAME"):
        Settings.from_env({"XCOMBUS_SECURITY_PROTOCOL": "SASL_PLAINTEXT"})
    with pytest.raises(XComConfigError, match="not a readable file"):
        Settings.from_env({"XCOMBUS_SSL_CAFILE": str(tmp_path / "missing.pem")})


def test_secrets_are_masked_wherever_settings_are_shown() -> None:
    s = Settings.from_env({}, api_token="tok-123", sasl_password="pw-456", sasl_username="u",
                          security_protocol="SASL_PLAINTEXT")
    for shown in (repr(s), str(s), f"{s}", f"{s!r}"):
        assert "tok-123" not in shown and "pw-456" not in shown and "'***'" in shown
