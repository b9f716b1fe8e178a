"""Create and check the XCom topic: explicit partitions, replication and retention.

The topic is the audit log, so it must never be log-compacted: its messages are keyed by
task instance, and compaction would keep only the last event of each task instance,
dropping every other key it pushed (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NamedTuple

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from .connection import kafka_options, started
from .errors import XComBrokerError, XComBusError, XComConfigError, XComTimeoutError
from .limits import TOPIC_MAX_MESSAGE_BYTES
from .settings import Settings

__all__ = ["TopicInfo", "describe_topic", "ensure_topic", "require_topic", "topic_configs"]


def topic_configs(settings: Settings) -> dict[str, str]:
    """The topic-level configs xcombus sets when it creates the topic."""
    return {
        "cleanup.policy": "delete",
        "retention.ms": str(settings.retention_ms),
        # Kafka's default; written down so the inline value limit has a known ceiling.
        "max.message.bytes": str(TOPIC_MAX_MESSAGE_BYTES),
    }


class TopicInfo(NamedTuple):
    """What the broker says about the topic."""

    name: str
    partitions: int
    #: Topic-level configs (cleanup.policy, retention.ms, ...), as strings.
    configs: dict[str, str]
    #: Whether every partition has a leader (a new topic has none for a moment).
    leaders_ready: bool


@asynccontextmanager
async def _admin(settings: Settings) -> AsyncIterator[AIOKafkaAdminClient]:
    """An admin client whose whole use is bounded, with Kafka errors translated to ours.

    (Its start is bounded and translated by ``started``; the requests after it share a
    bound of twice ``connect_timeout``.)"""
    admin = AIOKafkaAdminClient(
        **kafka_options(settings),
        client_id=f"{settings.client_id}-admin",
        request_timeout_ms=int(settings.connect_timeout * 1000),
    )
    try:
        async with asyncio.timeout(settings.connect_timeout * 2):
            async with started(admin, settings, f"about topic {settings.topic!r}", stop=admin.close):
                pass
            yield admin
    except XComBusError:
        raise
    except TimeoutError as exc:
        raise XComTimeoutError(
            f"Kafka at {settings.bootstrap_servers} did not answer within "
            f"{settings.connect_timeout * 2:.0f}s about topic {settings.topic!r}: "
            "is the broker running (xcombus broker start), and is XCOMBUS_BOOTSTRAP_SERVERS "
            "right?") from exc
    except KafkaError as exc:
        raise XComBrokerError(
            f"Kafka at {settings.bootstrap_servers} failed a request about topic "
            f"{settings.topic!r}: {exc}; is the broker running (xcombus broker start), and is "
            "XCOMBUS_BOOTSTRAP_SERVERS right?") from exc
    finally:
        await admin.close()


async def _describe(admin: AIOKafkaAdminClient, topic: str) -> TopicInfo | None:
    if topic not in await admin.list_topics():
        return None
    configs: dict[str, str] = {}
    for response in await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)]):
        for resource in response.resources:
            for entry in resource[4]:
                configs[entry[0]] = entry[1] or ""
    meta = await admin.describe_topics([topic])
    parts = meta[0]["partitions"] if meta else []
    return TopicInfo(topic, len(parts), configs, bool(parts) and all(p["leader"] >= 0 for p in parts))


async def describe_topic(settings: Settings) -> TopicInfo | None:
    """The topic's partitions and configs, or None when it does not exist. Creates nothing."""
    async with _admin(settings) as admin:
        return await _describe(admin, settings.topic)


def _check_not_compacted(info: TopicInfo) -> None:
    policy = info.configs.get("cleanup.policy", "")
    if "compact" in policy:
        raise XComConfigError(
            f"topic {info.name!r} has cleanup.policy={policy}: xcombus needs 'delete' "
            "(compaction by task-instance key drops XComs and erases the audit log); alter "
            "the topic or use another one")


async def ensure_topic(settings: Settings) -> int:
    """Create the topic if it is missing; refuse a compacted one. Return its partition count."""
    async with _admin(settings) as admin:
        topic = settings.topic
        if topic not in await admin.list_topics():
            # Another component may create it at the same moment: that is fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(
                    topic, settings.partitions, settings.replication_factor,
                    topic_configs=topic_configs(settings))])
        while True:
            info = await _describe(admin, topic)
            if info is not None:
                _check_not_compacted(info)
                # A new topic answers before its partitions have leaders; wait (bounded
                # by _admin) until all have one, so the first pushes need no retries.
                if info.leaders_ready:
                    return info.partitions
            await asyncio.sleep(0.05)


async def require_topic(settings: Settings) -> int:
    """The partition count of an existing topic; XComConfigError when it is missing.

    For processes that must not create the audit log themselves (an Airflow task with a
    mistyped XCOMBUS_TOPIC would otherwise write to a topic no materializer reads).
    """
    async with _admin(settings) as admin:
        while True:
            info = await _describe(admin, settings.topic)
            if info is None:
                raise XComConfigError(
                    f"topic {settings.topic!r} does not exist on {settings.bootstrap_servers}: "
                    "create it once with 'xcombus topic create' (or start 'xcombus materialize', "
                    "which creates it), or set XCOMBUS_TOPIC to the topic your materializers read")
            _check_not_compacted(info)
            if info.leaders_ready:
                return info.partitions
            await asyncio.sleep(0.05)
