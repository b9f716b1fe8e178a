"""MessagePack vs JSON for one xcombus push event: encoded size, encode and decode time.

    python -m benchmarks.experiments.encoding [--repeats 5] [--iterations 200000]

Backs the choice of MessagePack in ``xcombus/events.py``. The event is a
:class:`xcombus.events.Push` carrying a 31-byte value (what ``MsgspecXCom`` writes for a
small dict); decoders are typed with the ``Push | Clear`` union, as the materializer's is.
Each time is the median over ``--repeats`` runs of ``--iterations`` calls in a tight loop
(the loop's own overhead, some tens of nanoseconds, is included).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version
from typing import Any

import msgspec

from xcombus.backends import MsgspecXCom
from xcombus.events import SCHEMA_VERSION, Clear, Push, decode_event, encode_event

VALUE = MsgspecXCom.serialize_value({"rows": 4, "uri": "s3://b/k.csv"}, key="return_value")
EVENT = Push(
    schema=SCHEMA_VERSION,
    key="return_value",
    value=VALUE,
    codec=MsgspecXCom.codec,
    ts=1_790_000_000_123_456,
    # What XComBus.producer_id looks like: "host:pid:random".
    producer="worker-01:12345:a1b2c3",
    logical_date=1_789_948_800_000_000,
)


def per_call_us(fn: Callable[[], Any], iterations: int, repeats: int) -> float:
    """Median over ``repeats`` of the mean time of one call, in microseconds."""
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iterations):
            fn()
        runs.append((time.perf_counter() - start) / iterations * 1e6)
    return statistics.median(runs)


def formats() -> list[tuple[str, Callable[[Push], bytes], Callable[[bytes], Any]]]:
    mp_enc, mp_dec = msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(Push | Clear)
    js_enc, js_dec = msgspec.json.Encoder(), msgspec.json.Decoder(Push | Clear)
    return [
        ("MessagePack (xcombus.events encode_event/decode_event)", encode_event, decode_event),
        ("MessagePack (msgspec.msgpack, Push | Clear decoder)", mp_enc.encode, mp_dec.decode),
        ("JSON (msgspec.json, Push | Clear decoder; value base64)", js_enc.encode, js_dec.decode),
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=200_000)
    args = parser.parse_args(argv)
    assert len(VALUE) == 31, len(VALUE)

    rows = [["format", "bytes", "encode µs", "decode µs"]]
    for name, encode, decode in formats():
        raw = encode(EVENT)
        if decode(raw) != EVENT:
            raise RuntimeError(f"{name}: the event does not round-trip")
        enc_us = per_call_us(lambda enc=encode: enc(EVENT), args.iterations, args.repeats)
        dec_us = per_call_us(lambda dec=decode, raw=raw: dec(raw), args.iterations, args.repeats)
        rows.append([name, str(len(raw)), f"{enc_us:.3f}", f"{dec_us:.3f}"])

    print(f"one Push event with a {len(VALUE)}-byte value; median of {args.repeats} runs of "
          f"{args.iterations:,} calls; CPython {platform.python_version()}, "
          f"msgspec {version('msgspec')}")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    main()
