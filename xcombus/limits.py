"""The size and page limits every layer shares, each stated once.

Sizes nest, from the broker's limit inwards: a topic accepts record batches up to
``TOPIC_MAX_MESSAGE_BYTES``; the producer fills batches up to ``MAX_BATCH_BYTES`` (below it,
so a full batch is never refused); one record (key + event) must leave room for the batch's
headers (``MAX_RECORD_BYTES``); and an inline value must leave room for its event's envelope
(``MAX_INLINE_BYTES``, the ceiling of ``Settings.max_value_bytes``). A unit test checks the
nesting. ``MAX_PAGE`` bounds every listing: the view's, the HTTP API's and the CLI's.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MAX_BATCH_BYTES", "MAX_INLINE_BYTES", "MAX_PAGE", "MAX_RECORD_BYTES", "TOPIC_MAX_MESSAGE_BYTES"]

#: The topic's ``max.message.bytes`` (Kafka's default), written down when xcombus creates it.
TOPIC_MAX_MESSAGE_BYTES: Final = 1_048_588
#: The largest record batch the producer builds.
MAX_BATCH_BYTES: Final = 1_040_000
#: The largest record (key + value) a batch can carry, leaving room for batch headers.
MAX_RECORD_BYTES: Final = MAX_BATCH_BYTES - 1024
#: The largest serialized value carried inside an event (room left for the envelope).
MAX_INLINE_BYTES: Final = 1_000_000
#: The largest page a listing returns.
MAX_PAGE: Final = 10_000
