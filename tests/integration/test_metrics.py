"""The materializer's Prometheus metrics, scraped over HTTP from a real process."""

from __future__ import annotations

import asyncio
import subprocess
import time
import urllib.request

import pytest
from aiokafka import AIOKafkaProducer

from tests.helpers import MATERIALIZER, free_port, settings_env, stop_process
from xcombus import Settings, XComBus

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def test_materializer_exposes_applied_dead_letters_lag_and_latency(settings: Settings) -> None:
    port = free_port()
    async with XComBus(settings) as bus:
        receipts = [await bus.task_instance("d", "r", f"t{i}").xcom_push("k", i) for i in range(20)]
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
        await producer.start()
        await producer.send_and_wait(settings.topic, key=b"junk", value=b"junk", partition=0)
        await producer.stop()
        env = {**settings_env(settings), "XCOMBUS_METRICS_PORT": str(port)}
        proc = subprocess.Popen(MATERIALIZER, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            await bus.wait_visible(range(settings.partitions))
            deadline = time.monotonic() + 30
            metrics: dict[str, float] = {}
            while time.monotonic() < deadline:
                try:
                    metrics = scrape(port)
                except OSError:
                    metrics = {}
                if metrics.get("xcombus_materializer_events_applied_total") == 21:
                    break
                await asyncio.sleep(0.2)
        finally:
            stop_process(proc)
    assert metrics["xcombus_materializer_events_applied_total"] == 21
    assert metrics["xcombus_materializer_dead_letters_total"] == 1
    assert metrics["xcombus_materializer_batch_seconds_count"] >= 1
    partitions = {r.partition for r in receipts} | {0}
    for p in partitions:
        assert metrics[f'xcombus_materializer_lag_events{{partition="{p}"}}'] == 0
        assert metrics[f'xcombus_materializer_view_offset{{partition="{p}"}}'] > 0
