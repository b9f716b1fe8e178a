"""Prometheus metrics of the materializer (prometheus-client, on its own registry).

Exposed on ``XCOMBUS_METRICS_PORT`` by ``xcombus materialize``:

- ``xcombus_materializer_events_applied_total``: events folded into the view
  (dead letters included: they are consumed too);
- ``xcombus_materializer_dead_letters_total``: events that could not be applied;
- ``xcombus_materializer_batch_seconds``: time to fold and commit one fetched batch;
- ``xcombus_materializer_lag_events{partition}``: the partition's high watermark (as of the
  last fetch) minus the view's next offset;
- ``xcombus_materializer_view_offset{partition}``: the view's next offset.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["MaterializerMetrics"]


class MaterializerMetrics:
    """The materializer's metrics; ``serve(port)`` exposes them over HTTP."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events = Counter("xcombus_materializer_events_applied", "Events folded into the view.",
                              registry=r)
        self.dead_letters = Counter("xcombus_materializer_dead_letters", "Events dead-lettered.",
                                    registry=r)
        self.batch_seconds = Histogram(
            "xcombus_materializer_batch_seconds", "Time to fold and commit one fetched batch.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=r)
        self.lag = Gauge("xcombus_materializer_lag_events", "High watermark minus the view's offset.",
                         ["partition"], registry=r)
        self.offset = Gauge("xcombus_materializer_view_offset", "The view's next offset.",
                            ["partition"], registry=r)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Expose /metrics on ``addr:port`` (a daemon thread)."""
        start_http_server(port, addr=addr, registry=self.registry)

    def batch(self, seconds: float, events: int, dead_letters: int) -> None:
        """Record one committed batch: how long it took, its events and dead letters."""
        self.batch_seconds.observe(seconds)
        self.events.inc(events)
        self.dead_letters.inc(dead_letters)

    def positions(self, applied: Mapping[int, int], highwater: Mapping[int, int | None]) -> None:
        """Record each partition's applied offset and its lag behind the high watermark."""
        for partition, offset in applied.items():
            self.offset.labels(str(partition)).set(offset)
        for partition, hw in highwater.items():
            if hw is not None:
                self.lag.labels(str(partition)).set(max(0, hw - applied.get(partition, 0)))
