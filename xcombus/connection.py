"""How every Kafka client of xcombus connects and starts: options, bound, errors.

One place builds the connection options (servers, SASL, TLS), so the producer, the
materializer, the end-offset reader, the admin client and the audit readers cannot disagree
about how to reach the cluster; and one place starts a client (:func:`started`): within
``connect_timeout``, stopped again if anything fails (cancellation included, so a
half-started client never leaks), with aiokafka's errors translated into xcombus's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

from .errors import XComBrokerError, XComBusError, XComConnectTimeoutError
from .settings import Settings

__all__ = ["KafkaClient", "kafka_options", "started"]


class KafkaClient(Protocol):
    """What :func:`started` needs of an aiokafka client (an admin client, which closes
    instead of stopping, passes ``stop=admin.close``)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@asynccontextmanager
async def started(client: KafkaClient, settings: Settings, what: str, *, hint: str = "",
                  stop: Callable[[], Awaitable[object]] | None = None) -> AsyncIterator[None]:
    """Start ``client`` within ``connect_timeout``; the block holds further start-up steps.

        async with started(producer, settings, "to publish"):
            await producer.partitions_for(topic)     # same bound, same clean-up

    The client stays started when the block ends normally (the caller owns it from then on).
    If the start or the block fails, the client is stopped (``stop``, by default
    ``client.stop``) and a timeout becomes :class:`XComConnectTimeoutError`, an aiokafka or
    socket error :class:`XComBrokerError`; both name ``what`` the client was for, the
    servers and XCOMBUS_BOOTSTRAP_SERVERS, then ``hint``. xcombus's own errors pass as they are.
    """
    try:
        async with asyncio.timeout(settings.connect_timeout):
            await client.start()
            yield
    except BaseException as exc:
        with contextlib.suppress(Exception):
            await asyncio.wait_for((stop or client.stop)(), settings.connect_timeout)
        if isinstance(exc, XComBusError) or not _is_connection_error(exc):
            raise
        raise _translate(exc, settings, what, hint) from exc


def _is_connection_error(exc: BaseException) -> bool:
    # aiokafka is imported here, not at the top: the settings-only users of this module
    # (kafka_options is called by every client, after aiokafka is loaded anyway) stay light.
    from aiokafka.errors import KafkaError

    return isinstance(exc, TimeoutError | KafkaError | OSError)


def _translate(exc: BaseException, settings: Settings, what: str, hint: str) -> XComBrokerError:
    servers = settings.bootstrap_servers
    advice = ("is the broker running (xcombus broker start), and is XCOMBUS_BOOTSTRAP_SERVERS "
              "right?" + (f" {hint}" if hint else ""))
    if isinstance(exc, TimeoutError):
        return XComConnectTimeoutError(
            f"Kafka at {servers} did not answer within {settings.connect_timeout:g}s "
            f"(connect_timeout) {what}: {advice}")
    return XComBrokerError(f"cannot reach Kafka at {servers} {what} ({type(exc).__name__}: {exc}): {advice}")


def kafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments shared by every aiokafka client (never logged: they hold secrets)."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = settings.sasl_password
    if settings.security_protocol.endswith("SSL"):
        from aiokafka.helpers import create_ssl_context

        options["ssl_context"] = create_ssl_context(
            cafile=settings.ssl_cafile or None,
            certfile=settings.ssl_certfile or None,
            keyfile=settings.ssl_keyfile or None,
        )
    return options
