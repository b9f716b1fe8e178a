"""Create and check the XCom topic: explicit partitions, replication and retention.

The topic is the audit log, so it must never be log-compacted: its messages are keyed by
task instance, and compaction would keep only the last event of each task instance,
dropping every other key it pushed (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from .errors import XComBrokerError, XComConfigError, XComTimeoutError
from .settings import Settings

__all__ = ["ensure_topic"]


def topic_configs(settings: Settings) -> dict[str, str]:
    """The topic-level configs xcombus sets when it creates the topic."""
    return {
        "cleanup.policy": "delete",
        "retention.ms": str(settings.retention_ms),
        # Kafka's default; written down so the inline value limit has a known ceiling.
        "max.message.bytes": "1048588",
    }


async def ensure_topic(settings: Settings) -> int:
    """Create the topic if it is missing; refuse a compacted one. Return its partition count."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.client_id}-admin",
        request_timeout_ms=int(settings.connect_timeout * 1000),
    )
    try:
        async with asyncio.timeout(settings.connect_timeout * 2):
            await admin.start()
            topic = settings.topic
            if topic not in await admin.list_topics():
                # Another component may create it at the same moment: that is fine.
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics([NewTopic(
                        topic, settings.partitions, settings.replication_factor,
                        topic_configs=topic_configs(settings))])
            described = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic)])
            for response in described:
                for resource in response.resources:
                    for entry in resource[4]:
                        name, value = entry[0], entry[1]
                        if name == "cleanup.policy" and "compact" in (value or ""):
                            raise XComConfigError(
                                f"topic {topic!r} has cleanup.policy={value}: xcombus needs "
                                "'delete' (compaction by task-instance key drops XComs and "
                                "erases the audit log); alter the topic or use another one")
            # A new topic answers before its partitions have leaders; pushing then only
            # earns NotLeaderForPartition retries, so wait (bounded) until all have one.
            while True:
                meta = await admin.describe_topics([topic])
                parts = meta[0]["partitions"] if meta else []
                if parts and all(p["leader"] >= 0 for p in parts):
                    return len(parts)
                await asyncio.sleep(0.05)
    except TimeoutError as exc:
        raise XComTimeoutError(
            f"Kafka at {settings.bootstrap_servers} did not answer within "
            f"{settings.connect_timeout * 2:.0f}s while checking topic {settings.topic!r}: "
            "is the broker running? (xcombus broker start)") from exc
    except KafkaError as exc:
        raise XComBrokerError(
            f"cannot prepare topic {settings.topic!r} on {settings.bootstrap_servers}: {exc}; "
            "is the broker running? (xcombus broker start)") from exc
    finally:
        await admin.close()
