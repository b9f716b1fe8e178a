"""Settings: one frozen Struct, read from ``XCOMBUS_*`` variables and overridden by kwargs.

Every component (producer, materializer, readers, CLI, demo) reads the same names, so a
deployment configures them once, the way Airflow's ``AIRFLOW__CORE__*`` variables work.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from .errors import XComConfigError
from .limits import MAX_INLINE_BYTES

__all__ = ["Consistency", "Settings", "settings_with"]

_ENV_PREFIX = "XCOMBUS_"
# Kafka's own rule for topic names (kafka.common.internals.Topic).
_TOPIC_RE = re.compile(r"[A-Za-z0-9._-]{1,249}")
_SERVER_RE = re.compile(r"[A-Za-z0-9.\-\[\]:]+:\d{1,5}")

#: How a pull waits: "strong" sees every push that returned before it began; "eventual"
#: reads the view as it is.
Consistency = Literal["strong", "eventual"]
#: Fields whose values are secrets: masked wherever settings are printed.
_SECRETS = frozenset({"api_token", "api_tokens", "api_users", "sasl_password"})


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Configuration shared by every xcombus component.

    Build it with :meth:`from_env`; each field ``name`` is read from ``XCOMBUS_NAME``.
    """

    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = "xcombus.xcom"
    view_path: str = "xcombus.db"
    #: Consumer group of the materializer. Empty: derived from host and view path, so
    #: every view file is its own full replica (see docs/architecture.md).
    group_id: str = ""
    xcom_backend: str = "xcombus.backends.MsgspecXCom"
    client_id: str = "xcombus"
    #: Compression of the record batches pushes are sent in (one of Kafka's codecs;
    #: consumers decompress transparently). zstd by default: a batch of XCom events is
    #: repetitive (ids, producer, codec), so the audit log takes far less disk and
    #: the broker less CPU, and pushes were no slower (benchmarks/analysis.md).
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "zstd"
    #: Topic layout used when xcombus creates the topic.
    partitions: int = 6
    replication_factor: int = 1
    #: -1 keeps every event forever: the topic is the audit log and views are rebuilt
    #: from offset 0, so a finite retention trades away rebuilds of old runs.
    retention_ms: int = -1
    #: Bounds, in seconds, so that nothing waits forever.
    connect_timeout: float = 10.0
    push_timeout: float = 30.0
    pull_timeout: float = 30.0
    #: "strong": a pull waits until the view holds every push acknowledged before it
    #: began. "eventual": read the view as it is.
    consistency: Consistency = "strong"
    #: Largest serialized value carried inside an event (Kafka's default message limit
    #: is 1 MiB; leave room for the envelope).
    max_value_bytes: int = MAX_INLINE_BYTES
    #: Classes (dataclasses, msgspec Structs, enums) the default backend may rebuild:
    #: glob patterns over "module.Qualname", separated by commas or spaces.
    allowed_deserialization_classes: str = ""
    #: xcombus.airflow: the largest preview (UTF-8 bytes) a reference carries for Airflow's
    #: UI and REST API; 0 for none.
    preview_bytes: int = 1024
    #: ObjectStorageXCom: where large values go (an fsspec URL or a local directory),
    #: above which serialized size (bytes; -1 never, 0 always), and how compressed.
    object_storage_path: str = "xcombus-objects"
    object_storage_threshold: int = 65_536
    object_storage_compression: Literal["", "gzip", "zstd"] = ""
    #: Who manual changes (``xcombus set/delete/revert``, overrides) are recorded as when
    #: the caller names nobody; empty: the operating-system user.
    actor: str = ""
    #: The HTTP API: when set, every request needs "Authorization: Bearer <token>".
    #: A secret: never logged, masked in repr().
    api_token: str = ""
    #: The HTTP API's scoped tokens (docs/http.md): ``NAME:SCOPE:SECRET`` entries (scope
    #: ``read`` or ``write``) separated by commas or newlines; NAME is the principal, the
    #: actor of its writes. A secret: never logged, masked in repr().
    api_tokens: str = ""
    #: A file of more such entries, one per line ('#' starts a comment).
    api_tokens_file: str = ""
    #: Users of ``POST /auth/token``: ``NAME:PASSWORD`` entries (commas or newlines); each
    #: NAME is a principal of api_tokens, whose token the login answers with. A secret.
    api_users: str = ""
    #: The materializer's Prometheus metrics port on 0.0.0.0 (0: no metrics endpoint).
    metrics_port: int = 0
    #: How every Kafka client connects: passed through to aiokafka.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str = ""
    #: A secret: never logged, masked in repr().
    sasl_password: str = ""
    #: TLS: CA bundle, and a client certificate and key for mutual TLS (PEM files).
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""

    def __repr__(self) -> str:
        def shown(name: str) -> str:
            value = getattr(self, name)
            return "'***'" if name in _SECRETS and value else repr(value)

        fields = ", ".join(f"{f.name}={shown(f.name)}" for f in msgspec.structs.fields(self))
        return f"Settings({fields})"

    def __post_init__(self) -> None:
        if not _TOPIC_RE.fullmatch(self.topic):
            raise XComConfigError(
                f"topic {self.topic!r} is not a valid Kafka topic name: use 1-249 of "
                "letters, digits, '.', '_' and '-'"
            )
        servers = [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()]
        if not servers or not all(_SERVER_RE.fullmatch(s) for s in servers):
            raise XComConfigError(
                f"bootstrap_servers {self.bootstrap_servers!r} must be a comma-separated "
                "list of host:port"
            )
        if not self.view_path:
            raise XComConfigError("view_path is empty: set XCOMBUS_VIEW_PATH to a file path")
        for name in ("connect_timeout", "push_timeout", "pull_timeout"):
            if not getattr(self, name) > 0:
                raise XComConfigError(f"{name} must be a positive number of seconds")
        if self.partitions < 1 or self.replication_factor < 1:
            raise XComConfigError("partitions and replication_factor must be at least 1")
        if not 0 < self.max_value_bytes <= MAX_INLINE_BYTES:
            raise XComConfigError(
                f"max_value_bytes must be 1..{MAX_INLINE_BYTES} (an event must fit in one Kafka record "
                "batch under the default 1 MiB limit); use ObjectStorageXCom for larger values")
        if self.security_protocol.startswith("SASL") and not (self.sasl_username and self.sasl_password):
            raise XComConfigError(
                f"security_protocol {self.security_protocol} needs XCOMBUS_SASL_USERNAME and "
                "XCOMBUS_SASL_PASSWORD")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path and not os.path.isfile(path):
                raise XComConfigError(f"{name} {path!r} is not a readable file")
        if not 0 <= self.preview_bytes <= 65_536:
            raise XComConfigError("preview_bytes must be 0..65536 (XCOMBUS_PREVIEW_BYTES)")
        if self.object_storage_threshold < -1:
            raise XComConfigError("object_storage_threshold must be -1 (never), 0 (always) or a size")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``XCOMBUS_*`` variables (of ``env``, by default the process environment), then
        apply keyword overrides (``None`` is ignored)."""
        variables = os.environ if env is None else env
        raw: dict[str, Any] = {}
        for field in msgspec.structs.fields(cls):
            value = variables.get(_ENV_PREFIX + field.name.upper())
            if value is not None and value != "":
                raw[field.name] = value
        unknown = set(overrides) - {f.name for f in msgspec.structs.fields(cls)}
        if unknown:
            raise XComConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        raw.update({k: v for k, v in overrides.items() if v is not None})
        try:
            # strict=False lets "6" from the environment become 6.
            return msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as exc:
            # msgspec names the field as "$.compression": say which variable that is.
            where = re.search(r"\$\.(\w+)", str(exc))
            hint = f" (XCOMBUS_{where.group(1).upper()})" if where else ""
            raise XComConfigError(f"invalid xcombus setting{hint}: {exc}") from exc

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (validated again)."""
        return msgspec.structs.replace(self, **changes)

    @property
    def allowed_class_patterns(self) -> tuple[str, ...]:
        """The allow-list as a tuple of glob patterns."""
        return tuple(p for p in re.split(r"[\s,]+", self.allowed_deserialization_classes) if p)

    @property
    def effective_group_id(self) -> str:
        """The materializer's consumer group: the configured one, or one per view file."""
        if self.group_id:
            return self.group_id
        path = os.path.abspath(self.view_path)
        digest = hashlib.sha1(f"{socket.gethostname()}:{path}".encode()).hexdigest()[:12]
        return f"xcombus-view-{digest}"


def settings_with(settings: Settings | None = None, **overrides: Any) -> Settings:
    """``settings`` (by default read from the environment) with keyword overrides applied:
    how every component that takes ``settings=None, **overrides`` resolves them."""
    base = settings or Settings.from_env()
    return base.replace(**overrides) if overrides else base
