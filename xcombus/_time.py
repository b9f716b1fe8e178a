"""Time on the wire and in the view: integer microseconds since the Unix epoch, UTC.

Events and view rows carry times as µs integers; the API takes and returns timezone-aware
datetimes. Every conversion between the two goes through this module, so a naive datetime
(whose meaning depends on the machine's zone) is refused in one way everywhere.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import overload

from .errors import XComBusError, XComQueryError

__all__ = ["from_us", "now_us", "to_us"]


def now_us() -> int:
    """Wall-clock time in integer microseconds since the Unix epoch (UTC)."""
    return time.time_ns() // 1000


@overload
def to_us(moment: datetime | int, *, what: str = ..., error: type[XComBusError] = ...) -> int: ...
@overload
def to_us(moment: None, *, what: str = ..., error: type[XComBusError] = ...) -> None: ...
@overload
def to_us(moment: datetime | int | None, *, what: str = ...,
          error: type[XComBusError] = ...) -> int | None: ...


def to_us(moment: datetime | int | None, *, what: str = "time filters must be timezone-aware datetimes",
          error: type[XComBusError] = XComQueryError) -> int | None:
    """An aware datetime (or µs already) as µs since the epoch; None stays None.

    A naive datetime raises ``error`` with ``what`` (the caller names the argument, so the
    message says which one was naive).
    """
    if moment is None or isinstance(moment, int):
        return moment
    if moment.tzinfo is None:
        raise error(f"{what} (e.g. UTC)")
    return int(moment.timestamp() * 1_000_000)


@overload
def from_us(us: int) -> datetime: ...
@overload
def from_us(us: None) -> None: ...
@overload
def from_us(us: int | None) -> datetime | None: ...


def from_us(us: int | None) -> datetime | None:
    """µs since the epoch as an aware UTC datetime; None stays None."""
    return None if us is None else datetime.fromtimestamp(us / 1_000_000, tz=UTC)
