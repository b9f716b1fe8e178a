"""A local single-node Apache Kafka (KRaft): ``xcombus broker``, the demo, tests, benchmarks.

The broker is the official Apache Kafka build: the ``org.apache.kafka:kafka_2.13`` jars
and their runtime dependencies, resolved from Maven Central by Maven and cached under
``$XDG_CACHE_HOME/xcombus`` (``~/.cache/xcombus``). It listens on 127.0.0.1 only, keeps its
data, logs and pid file in one home directory, and :meth:`LocalBroker.stop` stops only the
process recorded in that pid file.

Why Kafka 4.3.1: the newest release line, and aiokafka 0.14 (which speaks the old protocol
versions Kafka 4 kept) passes our whole suite against it; Kafka 4.x runs KRaft only, so no
ZooKeeper is needed, and Java 17 is enough.

One readiness loop (:meth:`LocalBroker.wait_ready`: a client's metadata request lists the
brokers) and one stop loop (:meth:`LocalBroker.wait_exited`: SIGKILL after a deadline, then
reap). Multi-node clusters and SASL listeners are test fixtures (``tests/faults/cluster.py``)
built on the public hooks of :class:`LocalBroker`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, Final

from .errors import XComBrokerError, XComConfigError, XComTimeoutError

__all__ = ["KAFKA_VERSION", "LocalBroker", "cache_root", "new_cluster_id"]

KAFKA_VERSION: Final = "4.3.1"
# Kafka 4.x logs through slf4j 1.7; this binding routes it to the log4j 2 it ships.
_LOG4J_VERSION: Final = "2.25.4"
_HEAP: Final = "512m"
# Partitions of the group metadata topic (__consumer_offsets); each has its own coordinator.
_OFFSETS_PARTITIONS: Final = 5

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.xcombus</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

_SERVER_PROPERTIES = """# Written by xcombus: a single-node KRaft broker on loopback.
process.roles=broker,controller
node.id=1
listeners={protocol}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners={protocol}://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map={protocol}:{protocol},CONTROLLER:PLAINTEXT
controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}
inter.broker.listener.name={protocol}
log.dirs={data}
num.partitions=1
# xcombus creates its topic explicitly (partitions, retention, cleanup.policy=delete).
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions={offsets_partitions}
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
"""

_LOG4J2_PROPERTIES = """status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafkalog.name = kafka.log
logger.kafkalog.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def cache_root() -> Path:
    """Where xcombus caches the Kafka jars and, by default, broker homes."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "xcombus"


def new_cluster_id() -> str:
    """A new KRaft cluster id, as Kafka's ``Uuid.randomUuid().toString()`` makes it."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class LocalBroker:
    """One local Kafka broker, identified by its home directory.

    ``start()`` returns once a client's metadata request succeeds; ``stop()`` stops the
    process named in ``<home>/broker.pid`` only if it is this broker. Subclasses change the
    node's configuration through :meth:`server_properties`, :meth:`format_args`,
    :attr:`listener_protocol`, :attr:`jvm_memory` and :meth:`client_options`.
    """

    #: JVM heap flags of the broker process.
    jvm_memory: ClassVar[tuple[str, ...]] = (f"-Xmx{_HEAP}", "-Xms256m")
    #: The security protocol of the client listener.
    listener_protocol: ClassVar[str] = "PLAINTEXT"

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        kafka_version: str = KAFKA_VERSION,
    ) -> None:
        env_port = os.environ.get("XCOMBUS_BROKER_PORT")
        self.port = int(port or env_port or 9092)
        if not 1 <= self.port <= 65534:
            raise XComConfigError(f"broker port {self.port} is out of range")
        self.controller_port = self.port + 1
        default_home = cache_root() / f"broker-{self.port}"
        self.home = Path(home or os.environ.get("XCOMBUS_BROKER_HOME") or default_home).resolve()
        self.kafka_version = kafka_version
        self.lib_dir = cache_root() / f"kafka-{kafka_version}" / "lib"
        self.pid_file = self.home / "broker.pid"
        self.log_file = self.home / "logs" / "server.log"
        self.out_file = self.home / "logs" / "stdout.log"

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` of the client listener."""
        return f"127.0.0.1:{self.port}"

    # -- jars -----------------------------------------------------------------------
    def ensure_jars(self, timeout: float = 900.0) -> Path:
        """Resolve the Kafka jars with Maven once; later calls reuse the cache."""
        marker = self.lib_dir / ".complete"
        if marker.exists():
            return self.lib_dir
        mvn = shutil.which("mvn")
        if mvn is None:
            raise XComBrokerError(
                "Maven (mvn) is needed once to fetch the Apache Kafka jars: install it "
                "(e.g. apt-get install maven) or set XCOMBUS_BOOTSTRAP_SERVERS to a running broker"
            )
        work = self.lib_dir.parent
        work.mkdir(parents=True, exist_ok=True)
        (work / "pom.xml").write_text(_POM.format(kafka=self.kafka_version, log4j=_LOG4J_VERSION))
        staging = work / "lib.partial"
        shutil.rmtree(staging, ignore_errors=True)
        cmd = [mvn, "-B", "-q", "-f", str(work / "pom.xml"), "dependency:copy-dependencies",
               "-DincludeScope=runtime", f"-DoutputDirectory={staging}"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise XComTimeoutError(f"Maven did not resolve the Kafka jars within {timeout:.0f}s") from exc
        if proc.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            out = (proc.stdout + proc.stderr)[-3000:]
            raise XComBrokerError(f"Maven could not resolve Apache Kafka {self.kafka_version}:\n{out}")
        shutil.rmtree(self.lib_dir, ignore_errors=True)
        staging.rename(self.lib_dir)
        marker.write_text(self.kafka_version + "\n")
        return self.lib_dir

    # -- configuration (the hooks subclasses override) ---------------------------------
    def server_properties(self) -> str:
        """The text of this node's ``server.properties``."""
        return _SERVER_PROPERTIES.format(
            port=self.port, controller_port=self.controller_port, data=self.home / "data",
            protocol=self.listener_protocol, offsets_partitions=_OFFSETS_PARTITIONS)

    def format_args(self) -> list[str]:
        """StorageTool arguments naming the cluster id and the controller quorum."""
        return ["--standalone", "-t", new_cluster_id()]

    def client_options(self) -> dict[str, str]:
        """aiokafka options (authentication) the readiness probe connects with."""
        return {}

    # -- process ----------------------------------------------------------------------
    def _java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise XComBrokerError("Java 17 or newer is needed to run the local Kafka broker")
        return java

    def _write_config(self) -> Path:
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        config = self.home / "server.properties"
        config.write_text(self.server_properties())
        (self.home / "log4j2.properties").write_text(_LOG4J2_PROPERTIES.format(log=self.log_file))
        return config

    def _format_storage(self, config: Path) -> None:
        if (self.home / "data" / "meta.properties").exists():
            return
        cmd = [self._java(), "-Xmx256m", "-cp", f"{self.lib_dir}/*",
               f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
               "kafka.tools.StorageTool", "format", *self.format_args(), "-c", str(config)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise XComBrokerError(f"formatting Kafka storage failed:\n{(proc.stdout + proc.stderr)[-3000:]}")

    def pid(self) -> int | None:
        """The pid of this broker if it is running, else None."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            return None
        # The pid may have been reused by another process: check it is our broker.
        if "kafka.Kafka" in cmdline and str(self.home) in cmdline:
            return pid
        return None

    def start(self, timeout: float = 90.0) -> int:
        """Start the broker unless it runs already; return its pid once it answers."""
        running = self.pid()
        if running is not None:
            self.wait_ready(time.monotonic() + timeout)
            return running
        for port in (self.port, self.controller_port):
            # Something else answering there would pass the readiness probe for our broker.
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                raise XComBrokerError(
                    f"port {port} on 127.0.0.1 is already in use (another Kafka broker, or a "
                    f"process still holding it), so a broker in {self.home} cannot start there: "
                    f"stop that process, or choose another port (--port / XCOMBUS_BROKER_PORT; "
                    f"this broker also needs port + 1 for its controller)")
        self.ensure_jars()
        proc = self.spawn()
        self.wait_ready(time.monotonic() + timeout, proc)
        return proc.pid

    def spawn(self) -> subprocess.Popen[bytes]:
        """Write the config, format the storage once, launch the JVM and record its pid;
        return at once (:meth:`wait_ready` waits for it to answer)."""
        config = self._write_config()
        self._format_storage(config)
        cmd = [self._java(), *self.jvm_memory, "-XX:+UseG1GC",
               "-Djava.awt.headless=true",
               f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
               f"-Dkafka.logs.dir={self.home / 'logs'}",
               "-cp", f"{self.lib_dir}/*", "kafka.Kafka", str(config)]
        with open(self.out_file, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    cwd=self.home)
        self.pid_file.write_text(f"{proc.pid}\n")
        return proc

    def wait_ready(self, deadline: float, proc: subprocess.Popen[bytes] | None = None, *,
                   brokers: int = 1) -> None:
        """Return once this broker answers a metadata request listing at least ``brokers``
        brokers and every group coordinator is ready; raise if ``proc`` (its JVM, when we
        just launched it) exits first, or at ``deadline`` (a ``time.monotonic()`` value)."""
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise XComBrokerError(
                    f"Kafka exited with code {proc.returncode} during start-up; log tail:\n"
                    f"{_tail(self.log_file)}\n{_tail(self.out_file, 15)}")
            try:
                # A plain TCP connect first keeps aiokafka from logging refused connections.
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                _run_blocking(_probe(self.bootstrap_servers, self.client_options(), brokers))
                return
            except Exception as exc:  # any failure means "not ready yet"; keep the reason
                last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.5)
        raise XComTimeoutError(
            f"Kafka at {self.bootstrap_servers} did not answer in time ({last_error}); "
            f"log tail:\n{_tail(self.log_file)}")

    def send_signal(self, sig: int) -> int | None:
        """Send ``sig`` to this broker; return its pid, or None if it is not running."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        return pid

    def wait_exited(self, pid: int, deadline: float) -> None:
        """Wait until process ``pid`` (this broker) is gone, SIGKILL it at ``deadline``,
        reap it and remove the pid file."""
        while time.monotonic() < deadline and self.pid() is not None:
            _reap(pid)
            time.sleep(0.2)
        if self.pid() is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        _reap(pid)
        self.pid_file.unlink(missing_ok=True)

    def stop(self, timeout: float = 60.0) -> bool:
        """Stop this broker (SIGTERM, then SIGKILL after ``timeout``); False if not running."""
        pid = self.send_signal(signal.SIGTERM)
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        self.wait_exited(pid, time.monotonic() + timeout)
        return True

    def status(self) -> dict[str, object]:
        """A JSON-ready description of this broker."""
        pid = self.pid()
        return {
            "running": pid is not None,
            "pid": pid,
            "bootstrap_servers": self.bootstrap_servers,
            "kafka_version": self.kafka_version,
            "home": str(self.home),
            "log": str(self.log_file),
        }


def _run_blocking(coro: Coroutine[Any, Any, None]) -> None:
    """asyncio.run, also from code that already runs inside an event loop (a thread then)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
        return
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


def _reap(pid: int) -> None:
    """Collect our exited child so its /proc entry (a zombie) disappears."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _java_string_hash(text: str) -> int:
    """Java's ``String.hashCode`` of an ASCII string (Kafka places groups by it)."""
    h = 0
    for char in text:
        h = (31 * h + ord(char)) & 0xFFFFFFFF
    return h


def _probe_groups(partitions: int) -> list[str]:
    """One group id per partition of the group metadata topic: Kafka stores a group in
    partition ``abs(hashCode(group_id)) % partitions``."""
    groups: dict[int, str] = {}
    i = 0
    while len(groups) < partitions:
        group = f"xcombus-ready-{i}"
        groups.setdefault((_java_string_hash(group) & 0x7FFFFFFF) % partitions, group)
        i += 1
    return [groups[p] for p in sorted(groups)]


async def _probe(bootstrap_servers: str, options: dict[str, str], brokers: int) -> None:
    from aiokafka import AIOKafkaClient
    from aiokafka.client import CoordinationType
    from aiokafka.errors import for_code
    from aiokafka.protocol.admin import DescribeGroupsRequest

    client = AIOKafkaClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=3000, **options)
    try:
        await asyncio.wait_for(client.bootstrap(), 5)
        listed = len(client.cluster.brokers())
        if not listed:
            raise XComBrokerError("the broker answered but lists no brokers yet")
        if listed < brokers:
            raise XComBrokerError(f"the cluster answered but lists {listed} of {brokers} brokers")
        # A fresh broker creates its group metadata topic on the first FindCoordinator and
        # then loads each partition; until then consumers joining a group log every retry as
        # an aiokafka ERROR. Ready means every partition's coordinator answers for a group.
        for group in _probe_groups(_OFFSETS_PARTITIONS):
            node = await asyncio.wait_for(client.coordinator_lookup(CoordinationType.GROUP, group), 5)
            response = await asyncio.wait_for(client.send(node, DescribeGroupsRequest([group])), 5)
            error_code = response.groups[0][0]
            if error_code:
                raise for_code(error_code)()
    finally:
        await client.close()
