"""How every Kafka client of xcombus connects: servers, SASL and TLS from the settings.

One place builds these options, so the producer, the materializer, the end-offset reader,
the admin client and the audit readers cannot disagree about how to reach the cluster.
"""

from __future__ import annotations

from typing import Any

from .settings import Settings

__all__ = ["kafka_options"]


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
