"""xcombus.process: one error-to-exit-code mapping and one way to run until stopped."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from xcombus.errors import XComBrokerError, XComBusError, XComConfigError
from xcombus.process import EXIT_CONFIG, EXIT_FAILED, exit_codes, run_until_stopped


@pytest.mark.parametrize(("error", "code"), [(XComConfigError("set XCOMBUS_TOPIC"), EXIT_CONFIG),
                                              (XComBrokerError("is the broker running?"), EXIT_FAILED)])
def test_errors_become_a_message_and_an_exit_code(error: XComBusError, code: int,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited, exit_codes("xcombus test"):
        raise error
    assert exited.value.code == code
    assert capsys.readouterr().err == f"xcombus test: {error}\n"  # the message, no traceback


def test_exit_codes_is_also_a_decorator_with_its_own_failure_code(capsys: pytest.CaptureFixture[str]) -> None:
    @exit_codes("xcombus verify", failed=2)
    def verify() -> None:
        raise XComBusError("not a view")

    with pytest.raises(SystemExit) as exited:
        verify()
    assert exited.value.code == 2 and "xcombus verify: not a view" in capsys.readouterr().err


def test_other_exceptions_pass_through() -> None:
    with pytest.raises(KeyError), exit_codes("xcombus"):
        raise KeyError("a bug shows its traceback")


async def test_work_that_finishes_returns_its_result() -> None:
    async def work() -> int:
        return 7

    assert await run_until_stopped(work()) == 7


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_cancels_work_without_a_stop_function(sig: signal.Signals) -> None:
    async def forever() -> int:
        await asyncio.Event().wait()
        return 1

    asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), sig)
    assert await run_until_stopped(forever()) is None
    # The handlers are gone afterwards: the loop's default (none) is back.
    assert not asyncio.get_running_loop().remove_signal_handler(sig)


async def test_a_signal_asks_the_work_to_stop_when_it_can() -> None:
    stop = asyncio.Event()

    async def finishes_what_it_holds() -> str:
        await stop.wait()
        return "committed"

    asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)
    assert await run_until_stopped(finishes_what_it_holds(), stop=stop.set) == "committed"


async def test_errors_of_the_work_propagate() -> None:
    async def fails() -> None:
        raise XComBrokerError("down")

    with pytest.raises(XComBrokerError):
        await run_until_stopped(fails())
