"""Static checks of docker-compose.yml and the Dockerfile (no Docker engine needed).

The compose file is parsed with ``yaml.safe_load`` (which resolves the ``<<: *anchor``
merges the way Compose does) and checked against the code: the settings it passes must be
real :class:`~xcombus.settings.Settings` fields, the backend must import, the topic it
creates must match the topic the services use, and so on.
"""

from __future__ import annotations

import posixpath
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from xcombus.backends import resolve_backend
from xcombus.settings import Settings
from xcombus.topic import topic_configs

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

SERVICES = ("kafka", "create-topic", "materializer", "demo")
XCOMBUS_SERVICES = ("materializer", "demo")

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?err}, $NAME (Compose interpolation).
_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


# -- helpers: normalise the Compose shapes that may be written in more than one way ----------
def interpolate(value: str) -> str:
    """Resolve Compose variables as if none were set in the shell (defaults only)."""

    def sub(m: re.Match[str]) -> str:
        op, default = m.group(2), m.group(3)
        return default if op in (":-", "-") and default is not None else ""

    return _VAR_RE.sub(sub, value.replace("$$", "\0")).replace("\0", "$")


def variables(value: str) -> set[str]:
    return {m.group(1) or m.group(4) for m in _VAR_RE.finditer(value.replace("$$", ""))}


def env_of(service: dict[str, Any]) -> dict[str, str]:
    """``environment`` as a dict of strings, whether written as a list or a mapping."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        out: dict[str, str] = {}
        for item in raw:
            name, sep, value = str(item).partition("=")
            out[name] = value if sep else ""
        return out
    return {str(k): "" if v is None else str(v) for k, v in raw.items()}


def command_of(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command")
    if cmd is None:
        return []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def depends_of(service: dict[str, Any]) -> dict[str, str]:
    """``depends_on`` as {service: condition}; the list form means service_started."""
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in raw.items()}


def mounts_of(service: dict[str, Any]) -> list[tuple[str, str]]:
    """``volumes`` as (source, target) pairs, short or long syntax."""
    out = []
    for vol in service.get("volumes") or []:
        if isinstance(vol, dict):
            out.append((str(vol.get("source", "")), str(vol["target"])))
        else:
            parts = str(vol).split(":")
            out.append((parts[0], parts[1]) if len(parts) > 1 else ("", parts[0]))
    return out


def named_volume_at(service: dict[str, Any], target: str) -> str | None:
    for source, tgt in mounts_of(service):
        if posixpath.normpath(tgt) == posixpath.normpath(target):
            return source
    return None


def option_values(cmd: list[str], option: str) -> list[str]:
    """Values of ``--option value`` and ``--option=value`` in a command line."""
    values = []
    for i, arg in enumerate(cmd):
        if arg == option and i + 1 < len(cmd):
            values.append(cmd[i + 1])
        elif arg.startswith(option + "="):
            values.append(arg.split("=", 1)[1])
    return values


def walk_strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (str(k), *walk_strings(v))]
    if isinstance(node, list):
        return [s for item in node for s in walk_strings(item)]
    return [] if node is None else [str(node)]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    assert COMPOSE.is_file(), f"{COMPOSE} is missing"
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict) and isinstance(doc.get("services"), dict)
    return doc


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def xcombus_env(services: dict[str, dict[str, Any]], name: str) -> dict[str, str]:
    return {k: interpolate(v) for k, v in env_of(services[name]).items()}


# -- services ---------------------------------------------------------------------------
def test_all_services_exist(services: dict[str, dict[str, Any]]) -> None:
    missing = [s for s in SERVICES if s not in services]
    assert not missing, f"services missing from docker-compose.yml: {missing}"


def test_kafka_image_is_pinned(services: dict[str, dict[str, Any]]) -> None:
    image = services["kafka"].get("image", "")
    repo, sep, tag = image.rpartition(":")
    assert repo == "apache/kafka" and sep, f"kafka must run apache/kafka:<tag>, not {image!r}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"pin a release tag, not {tag!r}"
    assert services["create-topic"].get("image") == image, "create-topic should use the broker's image"


def test_kafka_runs_kraft_without_zookeeper(compose: dict[str, Any],
                                            services: dict[str, dict[str, Any]]) -> None:
    env = env_of(services["kafka"])
    roles = {r.strip() for r in env.get("KAFKA_PROCESS_ROLES", "").split(",")}
    assert {"broker", "controller"} <= roles
    node_id = env.get("KAFKA_NODE_ID")
    assert node_id, "KAFKA_NODE_ID is required in KRaft mode"
    voters = env.get("KAFKA_CONTROLLER_QUORUM_VOTERS", "").split(",")
    assert f"{node_id}@kafka:9093" in voters
    controller = env.get("KAFKA_CONTROLLER_LISTENER_NAMES", "")
    listeners = env.get("KAFKA_LISTENERS", "")
    assert controller and f"{controller}://:9093" in listeners.split(",")
    assert "PLAINTEXT://:9092" in listeners.split(",")
    protocols = dict(p.split(":", 1) for p in env.get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "").split(",")
                     if ":" in p)
    listener_names = {entry.split("://", 1)[0] for entry in listeners.split(",")}
    assert listener_names <= set(protocols), f"listeners {listener_names} lack a security protocol"
    assert "PLAINTEXT://kafka:9092" in env.get("KAFKA_ADVERTISED_LISTENERS", "").split(",")
    assert env.get("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR") == "1"
    assert env.get("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR") == "1"
    assert env.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "").lower() == "false"
    assert env.get("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS") == "0"
    strings = [s.lower() for s in walk_strings(compose)]
    assert not [s for s in strings if "zookeeper" in s], "KRaft only: no ZooKeeper anywhere"


def test_kafka_data_is_a_named_volume(services: dict[str, dict[str, Any]]) -> None:
    log_dirs = env_of(services["kafka"]).get("KAFKA_LOG_DIRS", "")
    assert log_dirs == "/var/lib/kafka/data"
    source = named_volume_at(services["kafka"], log_dirs)
    assert source and not source.startswith((".", "/")), "KAFKA_LOG_DIRS must be on a named volume"


def test_kafka_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    hc = services["kafka"].get("healthcheck") or {}
    test = hc.get("test")
    assert test, "kafka needs a healthcheck test"
    cmd = " ".join(test) if isinstance(test, list) else str(test)
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in cmd
    assert "--bootstrap-server localhost:9092" in cmd
    assert isinstance(hc.get("retries"), int) and hc["retries"] > 0
    for key in ("interval", "timeout", "start_period"):
        assert hc.get(key), f"healthcheck.{key} is not set"


def test_environment_values_are_not_yaml_booleans(services: dict[str, dict[str, Any]]) -> None:
    # Compose refuses true/false in an environment mapping: they must be quoted strings.
    for name, svc in services.items():
        raw = svc.get("environment") or {}
        if isinstance(raw, dict):
            bad = [k for k, v in raw.items() if isinstance(v, bool)]
            assert not bad, f"{name}: quote the boolean values of {bad}"


# -- the topic ----------------------------------------------------------------------------
def test_create_topic_waits_for_a_healthy_broker(services: dict[str, dict[str, Any]]) -> None:
    assert depends_of(services["create-topic"]).get("kafka") == "service_healthy"
    assert str(services["create-topic"].get("restart", "no")) == "no"


def test_create_topic_creates_the_xcom_topic_as_an_audit_log(services: dict[str, dict[str, Any]]) -> None:
    cmd = [interpolate(c) for c in command_of(services["create-topic"])]
    assert cmd and cmd[0].endswith("kafka-topics.sh")
    assert "--create" in cmd and "--if-not-exists" in cmd
    assert option_values(cmd, "--bootstrap-server") == ["kafka:9092"]
    configs = dict(c.split("=", 1) for c in option_values(cmd, "--config"))
    assert configs.get("cleanup.policy") == "delete"
    assert not [c for c in cmd if "compact" in c], "the audit-log topic must never be compacted"
    # The same configs xcombus itself would create the topic with.
    for key, value in topic_configs(Settings()).items():
        assert configs.get(key) == value, f"--config {key}={value} (xcombus.topic.topic_configs)"
    defaults = Settings()
    assert option_values(cmd, "--partitions") == [str(defaults.partitions)]
    assert option_values(cmd, "--replication-factor") == [str(defaults.replication_factor)]
    # The topic created is the topic every xcombus service uses.
    topics = option_values(cmd, "--topic")
    assert len(topics) == 1
    for name in XCOMBUS_SERVICES:
        assert xcombus_env(services, name).get("XCOMBUS_TOPIC", Settings().topic) == topics[0], name


# -- the xcombus services -------------------------------------------------------------------
def test_materializer_waits_for_the_topic(services: dict[str, dict[str, Any]]) -> None:
    deps = depends_of(services["materializer"])
    assert deps.get("create-topic") == "service_completed_successfully"
    assert deps.get("kafka") == "service_healthy"


def test_materializer_runs_the_materializer(services: dict[str, dict[str, Any]]) -> None:
    svc = services["materializer"]
    cmd = command_of(svc)
    assert "consumers.materializer" in cmd and cmd[cmd.index("consumers.materializer") - 1] == "-m"
    assert svc.get("build"), "materializer must be built from the Dockerfile"
    assert svc.get("restart") == "unless-stopped"
    assert svc.get("stop_signal") == "SIGTERM"
    assert svc.get("stop_grace_period")


def test_demo_runs_the_demo(services: dict[str, dict[str, Any]]) -> None:
    svc = services["demo"]
    assert command_of(svc) == ["xcombus", "demo"]
    assert svc.get("build"), "demo must be built from the Dockerfile"
    assert depends_of(svc).get("create-topic") == "service_completed_successfully"


@pytest.mark.parametrize("name", XCOMBUS_SERVICES)
def test_xcombus_services_reach_kafka(services: dict[str, dict[str, Any]], name: str) -> None:
    env = xcombus_env(services, name)
    # Set, so the demo starts no local broker; the broker's advertised in-network address.
    assert env.get("XCOMBUS_BOOTSTRAP_SERVERS") == "kafka:9092"


def test_xcombus_services_share_topic_and_backend(services: dict[str, dict[str, Any]]) -> None:
    mat, demo = (xcombus_env(services, n) for n in XCOMBUS_SERVICES)
    for key in ("XCOMBUS_BOOTSTRAP_SERVERS", "XCOMBUS_TOPIC", "XCOMBUS_XCOM_BACKEND"):
        assert key in mat, f"materializer does not set {key}"
        assert mat[key] == demo.get(key), f"{key} differs: {mat[key]!r} vs {demo.get(key)!r}"


@pytest.mark.parametrize("name", XCOMBUS_SERVICES)
def test_backend_is_importable(services: dict[str, dict[str, Any]], name: str,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    env = xcombus_env(services, name)
    backend = env.get("XCOMBUS_XCOM_BACKEND")
    assert backend, f"{name} does not set XCOMBUS_XCOM_BACKEND"
    # A backend shipped as a mounted module: map PYTHONPATH through the service's bind mounts.
    binds = {target: src for src, target in mounts_of(services[name]) if src and src.startswith((".", "/"))}
    for directory in filter(None, env.get("PYTHONPATH", "").split(":")):
        assert directory in binds, f"{name}: PYTHONPATH entry {directory} is not a mounted directory"
        host = (ROOT / binds[directory]).resolve()
        assert host.is_dir(), f"{name}: {binds[directory]} does not exist in the repository"
        monkeypatch.syspath_prepend(str(host))
    resolve_backend.cache_clear()
    resolve_backend(backend)  # raises XComConfigError when it cannot be imported


def test_every_xcombus_variable_is_a_setting(compose: dict[str, Any],
                                             services: dict[str, dict[str, Any]]) -> None:
    fields = {"XCOMBUS_" + f.name.upper() for f in msgspec.structs.fields(Settings)}
    used = {k for svc in services.values() for k in env_of(svc) if k.startswith("XCOMBUS_")}
    used |= {v for s in walk_strings(compose) for v in variables(s) if v.startswith("XCOMBUS_")}
    assert used, "no XCOMBUS_* settings found"
    unknown = sorted(used - fields)
    assert not unknown, f"not fields of xcombus.settings.Settings: {unknown}"


@pytest.mark.parametrize("name", XCOMBUS_SERVICES)
def test_environment_makes_valid_settings(services: dict[str, dict[str, Any]], name: str) -> None:
    Settings.from_env(xcombus_env(services, name))  # raises XComConfigError when invalid


@pytest.mark.parametrize("name", XCOMBUS_SERVICES)
def test_view_lives_on_the_view_volume(compose: dict[str, Any],
                                       services: dict[str, dict[str, Any]], name: str) -> None:
    view_path = xcombus_env(services, name).get("XCOMBUS_VIEW_PATH", "")
    assert posixpath.isabs(view_path), f"{name}: XCOMBUS_VIEW_PATH must be absolute, not {view_path!r}"
    source = named_volume_at(services[name], posixpath.dirname(view_path))
    assert source == "view", f"{name}: the `view` volume must be mounted at {posixpath.dirname(view_path)}"


def test_demo_and_materializer_write_different_view_files(services: dict[str, dict[str, Any]]) -> None:
    # One writer per view file (flock on <view>.lock); the demo runs its own materializer.
    mat, demo = (xcombus_env(services, n).get("XCOMBUS_VIEW_PATH") for n in XCOMBUS_SERVICES)
    assert mat and demo and posixpath.normpath(mat) != posixpath.normpath(demo)
    groups = [xcombus_env(services, n).get("XCOMBUS_GROUP_ID") for n in XCOMBUS_SERVICES]
    assert groups[0] is None or groups[0] != groups[1], "two views in one consumer group split the topic"


def test_named_volumes_are_declared(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared = set(compose.get("volumes") or {})
    used = {src for svc in services.values() for src, _ in mounts_of(svc)
            if src and not src.startswith((".", "/", "~", "$"))}
    assert {"kafka-data", "view"} <= used
    assert used <= declared, f"named volumes not declared top-level: {sorted(used - declared)}"


# -- the Dockerfile -----------------------------------------------------------------------
def _dockerfile() -> list[str]:
    assert DOCKERFILE.is_file(), f"{DOCKERFILE} is missing"
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_installs_the_project() -> None:
    lines = _dockerfile()
    assert [line.split()[1] for line in lines if line.startswith("FROM ")] == ["python:3.11-slim"]
    runs = [line for line in lines if line.startswith("RUN ")]
    assert any(re.search(r"pip install\b[^&;|]*\s\.(\s|$)", r) for r in runs), \
        "the Dockerfile must `pip install .`"
    # Every package pyproject.toml builds must be copied in before the install.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]]
    copied = " ".join(line for line in lines if line.startswith(("COPY ", "ADD ")))
    assert "pyproject.toml" in copied or re.search(r"COPY \. ", copied)
    for pkg in packages:
        assert pkg in copied or re.search(r"COPY \. ", copied), f"the Dockerfile does not copy {pkg}"
    assert "java" not in " ".join(runs).lower() and "jdk" not in " ".join(runs).lower()


def test_dockerfile_runs_as_a_user_who_can_write_the_view(services: dict[str, dict[str, Any]]) -> None:
    lines = _dockerfile()
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0", "0:0"), "the image must end as a non-root user"
    assert lines[-1].startswith("CMD") and "xcombus" in lines[-1] and "--help" in lines[-1]
    # An empty named volume takes the image directory's owner: /data must belong to the user.
    view_dir = posixpath.dirname(xcombus_env(services, "materializer")["XCOMBUS_VIEW_PATH"])
    runs = " ".join(line for line in lines if line.startswith("RUN "))
    assert re.search(rf"chown\s+(-\S+\s+)*{re.escape(users[-1].split(':')[0])}\S*\s+(\S+\s+)*{view_dir}\b",
                     runs), f"the Dockerfile must chown {view_dir} to {users[-1]}"
