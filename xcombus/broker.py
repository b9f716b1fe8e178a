"""A local single-node Apache Kafka (KRaft) for tests, the demo and development.

The broker is the official Apache Kafka build: the ``org.apache.kafka:kafka_2.13`` jars
and their runtime dependencies, resolved from Maven Central by Maven and cached under
``$XDG_CACHE_HOME/xcombus`` (``~/.cache/xcombus``). It listens on 127.0.0.1 only, keeps its
data, logs and pid file in one home directory, and :meth:`LocalBroker.stop` stops only the
process recorded in that pid file.

Why Kafka 4.3.1: the newest release line, and aiokafka 0.14 (which speaks the old protocol
versions Kafka 4 kept) passes our whole suite against it; Kafka 4.x runs KRaft only, so no
ZooKeeper is needed, and Java 17 is enough.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

from .errors import XComBrokerError, XComConfigError, XComTimeoutError

__all__ = ["KAFKA_VERSION", "LocalBroker", "LocalCluster", "cache_root"]

KAFKA_VERSION: Final = "4.3.1"
# Kafka 4.x logs through slf4j 1.7; this binding routes it to the log4j 2 it ships.
_LOG4J_VERSION: Final = "2.25.4"
_HEAP: Final = "512m"

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
offsets.topic.num.partitions=5
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
"""

# One node (broker and controller) of a LocalCluster: a static controller quorum, topics
# replicated to three nodes and writes refused below two in-sync replicas.
_CLUSTER_PROPERTIES = """# Written by xcombus: node {node_id} of a {nodes}-node KRaft cluster on loopback.
process.roles=broker,controller
node.id={node_id}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.quorum.voters={voters}
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
num.partitions=1
auto.create.topics.enable=false
default.replication.factor={replicas}
min.insync.replicas={min_isr}
unclean.leader.election.enable=false
offsets.topic.replication.factor={replicas}
offsets.topic.num.partitions=5
transaction.state.log.replication.factor={replicas}
transaction.state.log.min.isr={min_isr}
share.coordinator.state.topic.replication.factor={replicas}
share.coordinator.state.topic.min.isr={min_isr}
group.initial.rebalance.delay.ms=0
"""

# SASL/PLAIN on the client listener (tests of authenticated clients). The broker talks to
# itself as the first user.
_SASL_PROPERTIES = """sasl.enabled.mechanisms=PLAIN
sasl.mechanism.inter.broker.protocol=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=\
  org.apache.kafka.common.security.plain.PlainLoginModule required \
  username="{user}" password="{password}" {users};
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


def _kafka_uuid() -> str:
    """A cluster id as Kafka's ``Uuid.randomUuid().toString()`` makes it."""
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
    process named in ``<home>/broker.pid`` only if it is this broker.
    """

    #: JVM heap flags of the broker process.
    _jvm_memory: tuple[str, ...] = (f"-Xmx{_HEAP}", "-Xms256m")

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        kafka_version: str = KAFKA_VERSION,
        sasl_users: dict[str, str] | None = None,
    ) -> None:
        env_port = os.environ.get("XCOMBUS_BROKER_PORT")
        #: user -> password: when given, the client listener is SASL_PLAINTEXT with PLAIN.
        self.sasl_users = dict(sasl_users or {})
        for user, password in self.sasl_users.items():
            if not user.isidentifier() or '"' in password or "\\" in password:
                raise XComConfigError(f"SASL user {user!r}: use an identifier and a password without quotes")
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

    # -- process ----------------------------------------------------------------------
    def _java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise XComBrokerError("Java 17 or newer is needed to run the local Kafka broker")
        return java

    def _server_properties(self) -> str:
        text = _SERVER_PROPERTIES.format(
            port=self.port, controller_port=self.controller_port, data=self.home / "data",
            protocol="SASL_PLAINTEXT" if self.sasl_users else "PLAINTEXT")
        if self.sasl_users:
            (user, password), = list(self.sasl_users.items())[:1]
            users = " ".join(f'user_{u}="{p}"' for u, p in self.sasl_users.items())
            text += _SASL_PROPERTIES.format(user=user, password=password, users=users)
        return text

    def _format_args(self) -> list[str]:
        """StorageTool arguments naming the cluster id and the controller quorum."""
        return ["--standalone", "-t", _kafka_uuid()]

    def _write_config(self) -> Path:
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        config = self.home / "server.properties"
        config.write_text(self._server_properties())
        (self.home / "log4j2.properties").write_text(_LOG4J2_PROPERTIES.format(log=self.log_file))
        return config

    def _format_storage(self, config: Path) -> None:
        if (self.home / "data" / "meta.properties").exists():
            return
        cmd = [self._java(), "-Xmx256m", "-cp", f"{self.lib_dir}/*",
               f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
               "kafka.tools.StorageTool", "format", *self._format_args(), "-c", str(config)]
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
            self._wait_ready(time.monotonic() + timeout, None)
            return running
        self.ensure_jars()
        proc = self._spawn()
        self._wait_ready(time.monotonic() + timeout, proc)
        return proc.pid

    def _spawn(self) -> subprocess.Popen[bytes]:
        """Write the config, format the storage once, launch the JVM and record its pid."""
        config = self._write_config()
        self._format_storage(config)
        cmd = [self._java(), *self._jvm_memory, "-XX:+UseG1GC",
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

    def _wait_ready(self, deadline: float, proc: subprocess.Popen[bytes] | None) -> None:
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise XComBrokerError(
                    f"Kafka exited with code {proc.returncode} during start-up; log tail:\n"
                    f"{_tail(self.log_file)}\n{_tail(self.out_file, 15)}")
            try:
                # A plain TCP connect first keeps aiokafka from logging refused connections.
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                _run_blocking(_probe(self.bootstrap_servers, self.sasl_users))
                return
            except Exception as exc:  # any failure means "not ready yet"; keep the reason
                last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.5)
        raise XComTimeoutError(
            f"Kafka at {self.bootstrap_servers} did not answer in time ({last_error}); "
            f"log tail:\n{_tail(self.log_file)}")

    def stop(self, timeout: float = 60.0) -> bool:
        """Stop this broker (SIGTERM, then SIGKILL after ``timeout``); False if not running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pid() is not None:
            _reap(pid)
            time.sleep(0.2)
        if self.pid() is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
            _reap(pid)
        self.pid_file.unlink(missing_ok=True)
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


class _ClusterNode(LocalBroker):
    """One broker+controller of a :class:`LocalCluster` (its own home, ports and node id)."""

    _jvm_memory = (f"-Xmx{_HEAP}", "-Xms128m")

    def __init__(self, home: Path, *, port: int, node_id: int, cluster: LocalCluster) -> None:
        super().__init__(home, port=port, kafka_version=cluster.kafka_version)
        self.node_id = node_id
        self._cluster = cluster

    def _server_properties(self) -> str:
        nodes = len(self._cluster.nodes)
        replicas = min(nodes, 3)
        return _CLUSTER_PROPERTIES.format(
            node_id=self.node_id, nodes=nodes, port=self.port, controller_port=self.controller_port,
            voters=self._cluster.quorum_voters, data=self.home / "data",
            replicas=replicas, min_isr=max(1, replicas - 1))

    def _format_args(self) -> list[str]:
        # A static quorum (controller.quorum.voters): no --standalone, one shared cluster id.
        return ["-t", self._cluster.cluster_id]


class LocalCluster:
    """Several local Kafka nodes, each broker and controller, forming one KRaft cluster.

    ``ports`` holds each node's client port P; its controller listens on P+1. Node ``i``
    (0-based) has ``node.id`` i+1 and lives in ``<home>/node-<i+1>``. Topics get three
    replicas and need two in sync to accept writes (``min.insync.replicas=2``); unclean
    leader election is off, so a leader is always a replica that had every acknowledged
    record. Meant for fault tests: :meth:`kill_node` is ``kill -9``.
    """

    def __init__(self, home: str | os.PathLike[str], ports: list[int], *,
                 kafka_version: str = KAFKA_VERSION) -> None:
        if not ports:
            raise XComConfigError("a cluster needs at least one node port")
        taken = {q for p in ports for q in (p, p + 1)}
        if len(taken) != 2 * len(ports):
            raise XComConfigError(f"node ports {ports} overlap (each node uses P and P+1)")
        self.home = Path(home).resolve()
        self.kafka_version = kafka_version
        self.nodes = [_ClusterNode(self.home / f"node-{i + 1}", port=port, node_id=i + 1, cluster=self)
                      for i, port in enumerate(ports)]
        id_file = self.home / "cluster.id"
        try:
            self.cluster_id = id_file.read_text().strip()
        except OSError:
            self.cluster_id = _kafka_uuid()
            self.home.mkdir(parents=True, exist_ok=True)
            id_file.write_text(self.cluster_id + "\n")

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.bootstrap_servers for node in self.nodes)

    @property
    def quorum_voters(self) -> str:
        return ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)

    def start(self, timeout: float = 120.0) -> list[int]:
        """Start every node not running; return their pids once each node answers a
        metadata request that lists all nodes."""
        self.nodes[0].ensure_jars()
        procs = {i: node._spawn() for i, node in enumerate(self.nodes) if node.pid() is None}
        self._wait_ready(time.monotonic() + timeout, procs)
        return [node.pid() or -1 for node in self.nodes]

    def start_node(self, i: int, timeout: float = 120.0) -> int:
        """(Re)start node ``i``; return its pid once every node answers and lists all nodes."""
        node = self.nodes[i]
        pid = node.pid()
        procs = {} if pid is not None else {i: node._spawn()}
        self._wait_ready(time.monotonic() + timeout, procs)
        return node.pid() or -1

    def kill_node(self, i: int) -> bool:
        """``kill -9`` node ``i`` (no controlled shutdown); False if it was not running."""
        node = self.nodes[i]
        pid = node.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while node.pid() is not None and time.monotonic() < deadline:
                time.sleep(0.05)
            _reap(pid)
        node.pid_file.unlink(missing_ok=True)
        return pid is not None

    def stop_node(self, i: int, timeout: float = 60.0) -> bool:
        """Stop node ``i`` cleanly (SIGTERM, SIGKILL after ``timeout``); False if not running."""
        return self.nodes[i].stop(timeout)

    def stop(self, timeout: float = 60.0) -> int:
        """Stop every node: SIGTERM to all at once (so none waits for a quorum that has gone),
        SIGKILL after ``timeout``. Return how many were running."""
        running = [(node, pid) for node in self.nodes if (pid := node.pid()) is not None]
        for _, pid in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(node.pid() is not None for node, _ in running):
            for _, pid in running:
                _reap(pid)
            time.sleep(0.2)
        for node, pid in running:
            if node.pid() is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                time.sleep(0.2)
            _reap(pid)
        for node in self.nodes:
            node.pid_file.unlink(missing_ok=True)
        return len(running)

    def _wait_ready(self, deadline: float, procs: dict[int, subprocess.Popen[bytes]]) -> None:
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            for i, proc in procs.items():
                if proc.poll() is not None:
                    raise XComBrokerError(
                        f"Kafka node {i + 1} exited with code {proc.returncode} during start-up:\n"
                        f"{self._log_tails()}")
            try:
                # Every node must answer and list every node: after a kill -9 the others
                # still list the dead one until its session expires (about 9 s).
                for node in self.nodes:
                    socket.create_connection(("127.0.0.1", node.port), timeout=1).close()
                    _run_blocking(_probe(node.bootstrap_servers, {}, brokers=len(self.nodes)))
                return
            except Exception as exc:  # any failure means "not ready yet"; keep the reason
                last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.5)
        raise XComTimeoutError(
            f"the Kafka cluster at {self.bootstrap_servers} did not list all {len(self.nodes)} "
            f"brokers in time ({last_error}):\n{self._log_tails()}")

    def _log_tails(self, lines: int = 15) -> str:
        return "\n".join(f"-- node {n.node_id} ({n.log_file}):\n{_tail(n.log_file, lines)}\n"
                         f"{_tail(n.out_file, 5)}" for n in self.nodes)


def _run_blocking(coro: Any) -> None:
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


async def _probe(bootstrap_servers: str, sasl_users: dict[str, str], brokers: int = 1) -> None:
    from aiokafka import AIOKafkaClient

    auth: dict[str, str] = {}
    if sasl_users:
        user, password = next(iter(sasl_users.items()))
        auth = {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
                "sasl_plain_username": user, "sasl_plain_password": password}
    client = AIOKafkaClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=3000, **auth)
    try:
        await asyncio.wait_for(client.bootstrap(), 5)
        listed = len(client.cluster.brokers())
        if not listed:
            raise XComBrokerError("the broker answered but lists no brokers yet")
        if listed < brokers:
            raise XComBrokerError(f"the cluster answered but lists {listed} of {brokers} brokers")
    finally:
        await client.close()
