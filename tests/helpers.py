"""Helpers shared by tests: per-test settings, child-process environments, the CLI runner,
starting and stopping child processes.

Test modules import shared pieces from here (or tests/faults/workload.py), never from each
other or from a conftest.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from xcombus import Settings, XComBus, XComBusError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def make_settings(bootstrap_servers: str, directory: Path, *, topic_prefix: str = "xcombus.test",
                  **overrides: Any) -> Settings:
    """Settings for one test: its own topic and view file (in ``directory``), so tests never
    see each other, and none of the environment's XCOMBUS_* settings."""
    options: dict[str, Any] = {"partitions": 3, "connect_timeout": 10.0, "push_timeout": 20.0,
                               "pull_timeout": 20.0, **overrides}
    return Settings.from_env({}, bootstrap_servers=bootstrap_servers,
                             topic=f"{topic_prefix}.{uuid.uuid4().hex[:12]}",
                             view_path=str(directory / "view.db"), **options)


def clean_env() -> dict[str, str]:
    """This process's environment without any XCOMBUS_* variable."""
    return {k: v for k, v in os.environ.items() if not k.startswith("XCOMBUS_")}


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process the same settings, and only them: every
    other XCOMBUS_* variable (a developer's own) is left out."""
    env = clean_env()
    for name in ("bootstrap_servers", "topic", "view_path", "partitions", "connect_timeout",
                 "push_timeout", "pull_timeout", "xcom_backend", "allowed_deserialization_classes",
                 "object_storage_path", "object_storage_threshold", "object_storage_compression"):
        env[f"XCOMBUS_{name.upper()}"] = str(getattr(settings, name))
    # The example backend lives in examples/, importable as a mounted module would be.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(EXAMPLES), env.get("PYTHONPATH")]))
    return env


def cli(*args: str, settings: Settings | None = None, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m xcombus ARGS`` in a child process with the test's settings (or
    ``env``; without either, a clean environment)."""
    if env is None:
        env = settings_env(settings) if settings is not None else clean_env()
    return subprocess.run([sys.executable, "-m", "xcombus", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM,
                 timeout: float = 60) -> tuple[int, str]:
    """Send ``sig``, wait up to ``timeout`` seconds, then SIGKILL; return the exit code and
    the output the process wrote to its pipe (empty when it had none)."""
    proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return proc.returncode, out or ""


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


#: The materializer as a user starts it (the installed CLI).
MATERIALIZER = [sys.executable, "-m", "xcombus", "materialize"]


def start_materializer(settings: Settings, env: dict[str, str] | None = None) -> DrainedPopen:
    """Start ``xcombus materialize`` as a separate process."""
    return DrainedPopen([*MATERIALIZER, "--log-level", "INFO"],
                        env=env if env is not None else settings_env(settings), stdin=subprocess.DEVNULL)


async def wait_visible_or_dump(bus: XComBus, mat: DrainedPopen, partitions: Iterable[int]) -> None:
    """bus.wait_visible, and if it fails, print what the materializer's tasks were waiting on
    (its SIGUSR1 dump) before re-raising: a stuck materializer explains itself."""
    try:
        await bus.wait_visible(partitions)
    except XComBusError:
        mat.send_signal(signal.SIGUSR1)
        await asyncio.sleep(1)
        print(stop_process(mat)[1][-6000:])
        raise


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (free now; the caller binds it next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def live_server(settings: Settings, *, token: str = "", extra_env: dict[str, str] | None = None,
                secrets: Iterable[str] = ()) -> Iterator[str]:
    """Run ``python -m xcombus serve`` on a free port; yield its base URL once /health answers.

    Its output goes to a file next to the view (a pipe nobody reads would fill up and block
    the server's access log); at the end the file must not contain the token nor any of
    ``secrets``. ``extra_env`` adds variables (scoped tokens, users).
    """
    port = free_port()
    env = settings_env(settings)
    env["XCOMBUS_API_TOKEN"] = token
    env.update(extra_env or {})
    log_path = Path(settings.view_path).with_name(f"serve-{port}.log")
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "xcombus", "serve", "--port", str(port)], env=env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_process(proc, signal.SIGKILL)
                pytest.fail(f"xcombus serve did not start:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield base
    finally:
        stop_process(proc, timeout=20)
        logged = log_path.read_text()
        assert token == "" or token not in logged, "the server logged its token"
        assert not [s for s in secrets if s in logged], "the server logged a secret"
