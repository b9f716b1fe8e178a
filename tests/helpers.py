"""Helpers shared by tests: child-process environments and small async utilities."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

from xcombus import Settings, XComBus, XComBusError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process the same settings."""
    env = dict(os.environ)
    for name in ("bootstrap_servers", "topic", "view_path", "partitions", "connect_timeout",
                 "push_timeout", "pull_timeout", "xcom_backend", "allowed_deserialization_classes",
                 "object_storage_path", "object_storage_threshold", "object_storage_compression"):
        env[f"XCOMBUS_{name.upper()}"] = str(getattr(settings, name))
    # The example backend lives in examples/, importable as a mounted module would be.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(EXAMPLES), env.get("PYTHONPATH")]))
    return env


def cli(*args: str, settings: Settings, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m xcombus ARGS`` in a child process with the test's settings."""
    return subprocess.run([sys.executable, "-m", "xcombus", *args], capture_output=True, text=True,
                          timeout=timeout, env=settings_env(settings), stdin=subprocess.DEVNULL)


class DrainedPopen(subprocess.Popen[str]):
    """A child whose output is read continuously by a thread.

    A full pipe would block the child's logging, and with it its whole event loop: a test
    would then measure its own harness, not the child.
    """

    def __init__(self, args: list[str], **kwargs: object) -> None:
        super().__init__(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)  # type: ignore[call-overload]
        self._chunks: list[str] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.stdout is not None
        for line in self.stdout:
            self._chunks.append(line)

    def output(self) -> str:
        return "".join(self._chunks)

    def communicate(self, input: str | None = None, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        self._reader.join(10)
        return self.output(), ""


def start_materializer(settings: Settings) -> DrainedPopen:
    """Start ``python -m consumers.materializer`` as a separate process."""
    return DrainedPopen([sys.executable, "-m", "consumers.materializer", "--log-level", "INFO"],
                        env=settings_env(settings), stdin=subprocess.DEVNULL)


async def wait_visible_or_dump(bus: XComBus, mat: DrainedPopen, partitions: Iterable[int]) -> None:
    """bus.wait_visible, and if it fails, print what the materializer's tasks were waiting on
    (its SIGUSR1 dump) before re-raising: a stuck materializer explains itself."""
    try:
        await bus.wait_visible(partitions)
    except XComBusError:
        mat.send_signal(signal.SIGUSR1)
        await asyncio.sleep(1)
        mat.terminate()
        print(mat.communicate(timeout=60)[0][-6000:])
        raise
