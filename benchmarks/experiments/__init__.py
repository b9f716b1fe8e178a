"""Experiments behind design decisions the docs cite; not part of the timed suite.

- ``encoding.py``: MessagePack against JSON for a push event (``xcombus/events.py``).
- ``history_fetch.py``: what the fetcher's fetch size does to history from the version index.
- ``index_cost.py``: the version index's cost to the drain and the rebuild, interleaved
  pairs of two checkouts.
- ``sqlite_upsert.py``: what one upserted row costs SQLite alone (the writer child's share).
- ``topic_compression.py``: what each Kafka codec does to pushes and the topic's size
  (``XCOMBUS_COMPRESSION``'s default).

Run one as ``python -m benchmarks.experiments.NAME`` from the repository's root.
"""
