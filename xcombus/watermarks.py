"""Ask the broker for partitions' end offsets: the bound a read-your-writes pull waits for.

With ``acks=all`` the broker acknowledges a push only once it is below the high
watermark, so end offsets read *after* a push returned cover it; a pull that waits until
the view has applied them sees every push that finished before the pull began.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from .connection import kafka_options
from .errors import XComBrokerError, XComTimeoutError
from .settings import Settings

__all__ = ["EndOffsets"]


class EndOffsets:
    """A group-less consumer used only for ListOffsets requests; started on first use."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def _client(self) -> AIOKafkaConsumer:
        if self._consumer is not None:
            return self._consumer
        async with self._lock:
            if self._consumer is None:
                s = self._settings
                consumer = AIOKafkaConsumer(
                    **kafka_options(s),
                    client_id=f"{s.client_id}-offsets",
                    group_id=None,
                    enable_auto_commit=False,
                    isolation_level="read_committed",
                    request_timeout_ms=int(s.connect_timeout * 1000),
                )
                try:
                    async with asyncio.timeout(s.connect_timeout):
                        await consumer.start()
                except (TimeoutError, KafkaError, OSError) as exc:
                    with contextlib.suppress(Exception):
                        await consumer.stop()
                    raise XComBrokerError(
                        f"cannot reach Kafka at {s.bootstrap_servers} to learn end offsets "
                        f"({exc!r}); use consistency='eventual' to read without the broker"
                    ) from exc
                self._consumer = consumer
        return self._consumer

    async def get(self, partitions: Iterable[int], timeout: float) -> dict[int, int]:
        """partition -> end offset (the offset the next record will get)."""
        consumer = await self._client()
        topic = self._settings.topic
        tps = [TopicPartition(topic, p) for p in partitions]
        try:
            async with asyncio.timeout(timeout):
                ends = await consumer.end_offsets(tps)
        except TimeoutError:
            raise XComTimeoutError(
                f"Kafka did not report end offsets of {topic!r} partitions "
                f"{sorted(tp.partition for tp in tps)} within {timeout:.3g}s") from None
        except KafkaError as exc:
            raise XComBrokerError(f"reading end offsets of {topic!r} failed: {exc!r}") from exc
        return {tp.partition: off for tp, off in ends.items()}

    async def aclose(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), self._settings.connect_timeout)
