"""Static checks of the compose files and Dockerfiles (no Docker engine needed).

``docker-compose.yml`` + ``Dockerfile`` (Kafka, the topic, the materializer, the demo) and
``docker-compose.airflow.yml`` + ``Dockerfile.airflow`` (Apache Airflow 3.3 with
``xcombus.airflow.XComBusBackend`` as its XCom backend). The compose files are parsed with
``yaml.safe_load`` (which resolves the ``<<: *anchor`` merges the way Compose does) and
checked against the code: the settings they pass must be real
:class:`~xcombus.settings.Settings` fields, the backends must exist, the topic created must
match the topic the services use, and so on.
"""

from __future__ import annotations

import ast
import posixpath
import re
import shlex
import subprocess
import sys
import tomllib
import types
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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

AIRFLOW_COMPOSE = ROOT / "docker-compose.airflow.yml"
AIRFLOW_DOCKERFILE = ROOT / "Dockerfile.airflow"
AIRFLOW_BASE_IMAGE = "apache/airflow:3.3.2"
#: Airflow's [core] xcom_backend every Airflow container must name.
AIRFLOW_XCOM_BACKEND = "xcombus.airflow.XComBusBackend"
AIRFLOW_DAGS = ROOT / "examples" / "airflow"
#: The services of docker-compose.airflow.yml that run Apache Airflow.
AIRFLOW_SERVICES = ("airflow-init", "check-backend", "api-server", "scheduler", "dag-processor", "triggerer")
#: The long-running Airflow components: none may start before the topic exists.
AIRFLOW_DAEMONS = ("api-server", "scheduler", "dag-processor", "triggerer")
#: Every service built from Dockerfile.airflow: Airflow's and xcombus's materializer.
AIRFLOW_IMAGE_SERVICES = (*AIRFLOW_SERVICES, "materializer")

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


def argv_of(service: dict[str, Any]) -> list[str]:
    """``entrypoint`` + ``command``: what the container runs when it overrides the image's."""
    entry = service.get("entrypoint")
    if entry is None:
        head: list[str] = []
    else:
        head = shlex.split(entry) if isinstance(entry, str) else [str(e) for e in entry]
    return head + command_of(service)


def depends_of(service: dict[str, Any]) -> dict[str, str]:
    """``depends_on`` as {service: condition}; the list form means service_started."""
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in raw.items()}


def settled_before(services: dict[str, dict[str, Any]], name: str) -> set[tuple[str, str]]:
    """(service, condition) pairs that hold before ``name`` starts: ``depends_on`` followed
    transitively through conditions that wait (healthy, completed); service_started does not."""
    settled: set[tuple[str, str]] = set()
    todo, seen = [name], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for dep, condition in depends_of(services[current]).items():
            if condition != "service_started":
                settled.add((dep, condition))
                todo.append(dep)
    return settled


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


def assert_kafka_healthcheck(kafka: dict[str, Any]) -> None:
    hc = kafka.get("healthcheck") or {}
    test = hc.get("test")
    assert test, "kafka needs a healthcheck test"
    cmd = " ".join(test) if isinstance(test, list) else str(test)
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in cmd
    assert "--bootstrap-server localhost:9092" in cmd
    assert isinstance(hc.get("retries"), int) and hc["retries"] > 0
    for key in ("interval", "timeout", "start_period"):
        assert hc.get(key), f"healthcheck.{key} is not set"


def test_kafka_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    assert_kafka_healthcheck(services["kafka"])


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
    assert cmd == ["xcombus", "materialize"], f"run `xcombus materialize` (the installed CLI), not {cmd}"
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
def _dockerfile(path: Path = DOCKERFILE) -> list[str]:
    assert path.is_file(), f"{path} is missing"
    text = re.sub(r"\\\n", " ", path.read_text())
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


# -- docker-compose.airflow.yml: Apache Airflow 3.3 with xcombus as its XCom backend -----------
@pytest.fixture(scope="module")
def airflow_compose() -> dict[str, Any]:
    assert AIRFLOW_COMPOSE.is_file(), f"{AIRFLOW_COMPOSE} is missing"
    doc = yaml.safe_load(AIRFLOW_COMPOSE.read_text())
    assert isinstance(doc, dict) and isinstance(doc.get("services"), dict)
    return doc


@pytest.fixture(scope="module")
def airflow_services(airflow_compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return airflow_compose["services"]


def xcombus_settings_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith("XCOMBUS_")}


def test_airflow_services_exist(airflow_services: dict[str, dict[str, Any]]) -> None:
    missing = [s for s in ("kafka", "postgres", *AIRFLOW_IMAGE_SERVICES) if s not in airflow_services]
    assert not missing, f"services missing from {AIRFLOW_COMPOSE.name}: {missing}"


def test_airflow_compose_is_its_own_project(airflow_compose: dict[str, Any]) -> None:
    # Both compose files live in one directory, whose name would be both projects' name:
    # `up` on one would then take the other's containers for orphans and share its volumes.
    assert airflow_compose.get("name"), f"{AIRFLOW_COMPOSE.name} needs a top-level project name"


def test_airflow_services_run_one_image(airflow_services: dict[str, dict[str, Any]]) -> None:
    built = {}
    for name, svc in airflow_services.items():
        build = svc.get("build")
        if not build:
            continue
        context, dockerfile = ((build, "Dockerfile") if isinstance(build, str)
                               else (build.get("context", "."), build.get("dockerfile", "Dockerfile")))
        assert (ROOT / context / dockerfile).resolve() == AIRFLOW_DOCKERFILE, \
            f"{name} must be built from {AIRFLOW_DOCKERFILE.name}"
        built[name] = (svc.get("image"), posixpath.normpath(context), dockerfile)
    # Every Airflow container and the materializer, and nothing else, run the built image.
    assert set(built) == set(AIRFLOW_IMAGE_SERVICES), sorted(set(built) ^ set(AIRFLOW_IMAGE_SERVICES))
    assert len(set(built.values())) == 1, f"one image for all of them, not {built}"
    image = next(iter(built.values()))[0]
    assert image and not image.startswith("apache/airflow"), \
        "tag the built image with a name of its own, not the official image's"


@pytest.mark.parametrize("name", AIRFLOW_IMAGE_SERVICES)
def test_airflow_xcom_backend_is_xcombus(airflow_services: dict[str, dict[str, Any]], name: str) -> None:
    env = xcombus_env(airflow_services, name)
    assert env.get("AIRFLOW__CORE__XCOM_BACKEND") == AIRFLOW_XCOM_BACKEND


def test_airflow_services_share_settings(airflow_services: dict[str, dict[str, Any]]) -> None:
    envs = {name: xcombus_env(airflow_services, name) for name in AIRFLOW_IMAGE_SERVICES}
    reference = xcombus_settings_env(envs["scheduler"])
    for key in ("XCOMBUS_BOOTSTRAP_SERVERS", "XCOMBUS_TOPIC", "XCOMBUS_VIEW_PATH", "XCOMBUS_XCOM_BACKEND"):
        assert key in reference, f"the Airflow services do not set {key}"
    assert reference["XCOMBUS_BOOTSTRAP_SERVERS"] == "kafka:9092"
    for name, env in envs.items():
        mine = xcombus_settings_env(env)
        differ = sorted(k for k in reference.keys() | mine.keys() if reference.get(k) != mine.get(k))
        assert not differ, f"{name}: XCOMBUS_* settings differ from the scheduler's: {differ}"
    # Airflow's own configuration too (the JWT secret, the DB, the executor...): one anchor.
    airflow_cfg = {name: {k: v for k, v in envs[name].items() if k.startswith("AIRFLOW__")}
                   for name in AIRFLOW_SERVICES}
    for name, cfg in airflow_cfg.items():
        differ = sorted(k for k in cfg.keys() | airflow_cfg["scheduler"].keys()
                        if cfg.get(k) != airflow_cfg["scheduler"].get(k))
        assert not differ, f"{name}: AIRFLOW__* settings differ from the scheduler's: {differ}"


def test_airflow_xcom_backend_exists_in_this_checkout(airflow_services: dict[str, dict[str, Any]]) -> None:
    # Parsed, not imported: importing xcombus.airflow needs Apache Airflow.
    module, _, cls = xcombus_env(airflow_services, "scheduler")["AIRFLOW__CORE__XCOM_BACKEND"].rpartition(".")
    assert module and cls, "AIRFLOW__CORE__XCOM_BACKEND must be a dotted path module.Class"
    base = ROOT.joinpath(*module.split("."))
    path = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
    assert path.is_file(), f"module {module} is not in this checkout"
    assert module.split(".")[0] in {p.rstrip("*") for p in tomllib.loads(
        (ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]}, \
        f"{module} is not in a package pyproject.toml installs"
    tree = ast.parse(path.read_text(), str(path))
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    assert cls in classes, f"{path.relative_to(ROOT)} defines no top-level class {cls}"
    methods = {n.name for n in classes[cls].body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    assert {"serialize_value", "deserialize_value"} <= methods, f"{cls} is not an XCom backend"
    # What Dockerfile.airflow installs for it: the airflow extra brings Apache Airflow.
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(re.match(r"apache-airflow\b", dep) for dep in extras.get("airflow", []))


def test_airflow_value_codec_is_importable(airflow_services: dict[str, dict[str, Any]]) -> None:
    # XCOMBUS_XCOM_BACKEND: xcombus's own codec (not Airflow's setting), importable without Airflow.
    resolve_backend.cache_clear()
    resolve_backend(xcombus_env(airflow_services, "scheduler")["XCOMBUS_XCOM_BACKEND"])


def test_every_airflow_xcombus_variable_is_a_setting(airflow_compose: dict[str, Any],
                                                     airflow_services: dict[str, dict[str, Any]]) -> None:
    fields = {"XCOMBUS_" + f.name.upper() for f in msgspec.structs.fields(Settings)}
    used = {k for svc in airflow_services.values() for k in env_of(svc) if k.startswith("XCOMBUS_")}
    used |= {v for s in walk_strings(airflow_compose) for v in variables(s) if v.startswith("XCOMBUS_")}
    assert used, "no XCOMBUS_* settings found"
    unknown = sorted(used - fields)
    assert not unknown, f"not fields of xcombus.settings.Settings: {unknown}"


@pytest.mark.parametrize("name", AIRFLOW_IMAGE_SERVICES)
def test_airflow_environment_makes_valid_settings(airflow_services: dict[str, dict[str, Any]],
                                                  name: str) -> None:
    Settings.from_env(xcombus_env(airflow_services, name))  # raises XComConfigError when invalid


def test_materializer_and_scheduler_share_the_view(airflow_compose: dict[str, Any],
                                                   airflow_services: dict[str, dict[str, Any]]) -> None:
    view_path = xcombus_env(airflow_services, "scheduler")["XCOMBUS_VIEW_PATH"]
    assert posixpath.isabs(view_path), f"XCOMBUS_VIEW_PATH must be absolute, not {view_path!r}"
    view_dir = posixpath.dirname(view_path)
    sources = {name: named_volume_at(airflow_services[name], view_dir) for name in ("materializer", "scheduler")}
    assert all(sources.values()), f"mount one named volume at {view_dir} in both: {sources}"
    assert sources["materializer"] == sources["scheduler"], f"one volume, not {sources}"
    assert not sources["scheduler"].startswith((".", "/", "~", "$")), "a named volume, not a bind mount"
    assert sources["scheduler"] in (airflow_compose.get("volumes") or {})
    # One writer per view file: only the materializer service materializes.
    writers = [name for name, svc in airflow_services.items()
               if "materialize" in argv_of(svc)]
    assert writers == ["materializer"], writers
    # Tasks start once the materializer is healthy (its view exists: view-mode pulls).
    assert depends_of(airflow_services["scheduler"]).get("materializer") == "service_healthy"
    assert airflow_services["materializer"].get("healthcheck", {}).get("test")


def test_materializer_runs_xcombus_materialize(airflow_services: dict[str, dict[str, Any]]) -> None:
    svc = airflow_services["materializer"]
    argv = argv_of(svc)
    assert argv[-2:] == ["xcombus", "materialize"], f"run `xcombus materialize`, not {argv}"
    assert svc.get("restart") == "unless-stopped"
    assert svc.get("stop_signal") == "SIGTERM" and svc.get("stop_grace_period")
    settled = settled_before(airflow_services, "materializer")
    assert ("airflow-init", "service_completed_successfully") in settled, "the materializer needs the topic"
    assert ("kafka", "service_healthy") in settled


def test_airflow_init_migrates_and_creates_the_topic(airflow_services: dict[str, dict[str, Any]]) -> None:
    init = airflow_services["airflow-init"]
    argv = argv_of(init)
    assert argv[:2] == ["/bin/bash", "-c"] and len(argv) == 3, f"one bash script, not {argv}"
    script = argv[2].replace("$$", "$")
    assert re.search(r"^\s*set -\w*e", script, re.M), "the script must stop at the first failing step"
    for step in (r"airflow db migrate", r"airflow users create\b.*--role Admin", r"xcombus topic create"):
        assert re.search(step, script.replace("\\\n", " ")), f"airflow-init does not run `{step}`"
    # The topic is created with the compose's settings (the anchor), not flags of its own.
    assert not re.search(r"xcombus topic create[^\n]*--", script)
    done = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"airflow-init's script is not valid bash: {done.stderr}"
    deps = depends_of(init)
    assert deps.get("kafka") == "service_healthy" and deps.get("postgres") == "service_healthy"
    assert str(init.get("restart", "no")) == "no"


@pytest.mark.parametrize("name", (*AIRFLOW_DAEMONS, "check-backend"))
def test_airflow_starts_after_topic_broker_and_db(airflow_services: dict[str, dict[str, Any]], name: str) -> None:
    settled = settled_before(airflow_services, name)
    for need in (("kafka", "service_healthy"), ("postgres", "service_healthy"),
                 ("airflow-init", "service_completed_successfully")):
        assert need in settled, f"{name} may start before {need[0]} is {need[1].removeprefix('service_')}"
    if name != "check-backend":
        assert ("check-backend", "service_completed_successfully") in settled, \
            f"{name} may start before the XCom backend class was checked"


@pytest.mark.parametrize("name", AIRFLOW_DAEMONS)
def test_airflow_daemons_run_their_component(airflow_services: dict[str, dict[str, Any]], name: str) -> None:
    svc = airflow_services[name]
    assert command_of(svc) == [name] and "entrypoint" not in svc, "the image's entrypoint runs `airflow NAME`"
    assert (svc.get("healthcheck") or {}).get("test"), f"{name} needs a healthcheck"
    assert svc.get("restart") in ("always", "unless-stopped")


def _check_backend_script(airflow_services: dict[str, dict[str, Any]]) -> str:
    argv = argv_of(airflow_services["check-backend"])
    assert argv[:2] == ["python", "-c"] and len(argv) == 3, f"one Python script, not {argv}"
    return argv[2].replace("$$", "$")


def test_check_backend_prints_the_class_airflow_uses(airflow_services: dict[str, dict[str, Any]]) -> None:
    # Airflow 3's "Verifying Custom XCom Backend usage in Containers": XCom.__name__ from
    # airflow.sdk.execution_time.xcom names the class really in use.
    tree = ast.parse(_check_backend_script(airflow_services))
    imports = {(node.module, alias.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
               for alias in node.names}
    assert ("airflow.sdk.execution_time.xcom", "XCom") in imports
    assert str(airflow_services["check-backend"].get("restart", "no")) == "no"


@pytest.mark.parametrize(("module", "name", "passes"), [
    ("xcombus.airflow", "XComBusBackend", True),
    ("airflow.sdk.bases.xcom", "BaseXCom", False),  # Airflow's default: the setting was lost
    ("somewhere.else", "XComBusBackend", False),
])
def test_check_backend_fails_unless_xcombus(airflow_services: dict[str, dict[str, Any]],
                                            monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                            module: str, name: str, passes: bool) -> None:
    # Run the service's script here against a stand-in for Airflow's modules.
    xcom_cls = type(name, (), {"__module__": module})
    fakes = {"airflow": {}, "airflow.sdk": {}, "airflow.sdk.execution_time": {},
             "airflow.configuration": {"conf": types.SimpleNamespace(get=lambda *_: f"{module}.{name}")},
             "airflow.sdk.execution_time.xcom": {"XCom": xcom_cls}}
    for mod_name, attrs in fakes.items():
        monkeypatch.setitem(sys.modules, mod_name, types.ModuleType(mod_name))
        for attr, value in attrs.items():
            setattr(sys.modules[mod_name], attr, value)
    for key, value in xcombus_settings_env(xcombus_env(airflow_services, "check-backend")).items():
        monkeypatch.setenv(key, value)
    script = _check_backend_script(airflow_services)
    try:
        exec(compile(script, "check-backend", "exec"), {"__name__": "__main__"})
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    assert f"XCom.__name__ = {name}" in capsys.readouterr().out.replace("'", "")
    assert (code in (0, None)) is passes, f"exit status {code!r}"


def test_airflow_kafka_is_the_same_broker(services: dict[str, dict[str, Any]],
                                          airflow_services: dict[str, dict[str, Any]]) -> None:
    assert airflow_services["kafka"] == services["kafka"], "kafka differs from docker-compose.yml's"
    assert_kafka_healthcheck(airflow_services["kafka"])


def test_postgres_is_airflows_metadata_db(airflow_services: dict[str, dict[str, Any]]) -> None:
    pg = airflow_services["postgres"]
    assert str(pg.get("image", "")).startswith("postgres:")
    hc = pg.get("healthcheck") or {}
    test = hc.get("test")
    assert test and "pg_isready" in (" ".join(test) if isinstance(test, list) else str(test))
    assert isinstance(hc.get("retries"), int) and hc["retries"] > 0
    pg_env = xcombus_env(airflow_services, "postgres")
    url = urlsplit(xcombus_env(airflow_services, "scheduler")["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert url.scheme.startswith("postgresql") and url.hostname == "postgres"
    assert url.username == pg_env["POSTGRES_USER"] and url.password == pg_env["POSTGRES_PASSWORD"]
    assert url.path == "/" + pg_env["POSTGRES_DB"]
    source = named_volume_at(pg, "/var/lib/postgresql/data")
    assert source and not source.startswith((".", "/")), "the metadata DB must be on a named volume"


def test_airflow_secrets_are_read_from_the_environment(airflow_services: dict[str, dict[str, Any]]) -> None:
    secret = re.compile(r"PASSWORD|SECRET|FERNET_KEY|TOKEN")
    for name, svc in airflow_services.items():
        for key, raw in env_of(svc).items():
            if secret.search(key):
                assert variables(raw), f"{name}: {key} is hard-coded: use ${{VAR:-local-default}}"
    raw_conn = env_of(airflow_services["scheduler"])["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert variables(raw_conn) == variables(env_of(airflow_services["postgres"])["POSTGRES_PASSWORD"])


def test_airflow_runs_local_executor_against_the_api_server(airflow_services: dict[str, dict[str, Any]]) -> None:
    env = xcombus_env(airflow_services, "scheduler")
    assert env.get("AIRFLOW__CORE__EXECUTOR") == "LocalExecutor"
    # Task processes (children of the scheduler) reach the execution API in the api-server.
    url = urlsplit(env.get("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", ""))
    assert url.hostname == "api-server" and url.path.rstrip("/") == "/execution", url.geturl()
    published = [str(p).rsplit(":", 1)[-1] for p in airflow_services["api-server"].get("ports") or []]
    assert str(url.port) in published, f"the api-server listens on {published}, not {url.port}"
    # Every component signs or checks the tasks' JWTs with one secret (shared by the anchor).
    assert env.get("AIRFLOW__API_AUTH__JWT_SECRET")
    assert "FabAuthManager" in env.get("AIRFLOW__CORE__AUTH_MANAGER", ""), "`airflow users create` needs FAB"


@pytest.mark.parametrize("name", ("scheduler", "dag-processor", "triggerer"))
def test_dags_folder_is_examples_airflow(airflow_services: dict[str, dict[str, Any]], name: str) -> None:
    dags = xcombus_env(airflow_services, name).get("AIRFLOW__CORE__DAGS_FOLDER", "/opt/airflow/dags")
    source = named_volume_at(airflow_services[name], dags)
    assert source and source.startswith("."), f"{name}: bind-mount examples/airflow at {dags}"
    assert (ROOT / source).resolve() == AIRFLOW_DAGS
    assert list(AIRFLOW_DAGS.glob("*.py")), "examples/airflow holds no DAG file"


def test_airflow_named_volumes_are_declared(airflow_compose: dict[str, Any],
                                            airflow_services: dict[str, dict[str, Any]]) -> None:
    declared = set(airflow_compose.get("volumes") or {})
    used = {src for svc in airflow_services.values() for src, _ in mounts_of(svc)
            if src and not src.startswith((".", "/", "~", "$"))}
    assert used <= declared, f"named volumes not declared top-level: {sorted(used - declared)}"


def test_airflow_environment_values_are_not_yaml_booleans(airflow_services: dict[str, dict[str, Any]]) -> None:
    test_environment_values_are_not_yaml_booleans(airflow_services)


# -- Dockerfile.airflow --------------------------------------------------------------------
def test_airflow_dockerfile_installs_xcombus_into_the_official_image() -> None:
    lines = _dockerfile(AIRFLOW_DOCKERFILE)
    assert [line.split()[1] for line in lines if line.startswith("FROM ")] == [AIRFLOW_BASE_IMAGE]
    user, installs = "airflow", []  # the official image runs as airflow
    for line in lines:
        if line.startswith("USER "):
            user = line.split()[1].split(":")[0]
        elif line.startswith("RUN ") and re.search(r"\bpip install\b", line):
            installs.append((user, line))
    ours = [(u, r) for u, r in installs if re.search(r"""(^|\s)["']?\.\[airflow\]["']?(\s|$)""", r)]
    assert ours, "Dockerfile.airflow must `pip install '.[airflow]'`"
    for u, run in ours:
        assert u == "airflow", f"pip install runs as {u}: the image installs packages as airflow"
        # Pinned to the image's own Airflow, so resolving the extra cannot change it.
        assert re.search(r"""["']?apache-airflow==(\$\{AIRFLOW_VERSION\}|\$AIRFLOW_VERSION|3\.3\.2)["']?(\s|$)""",
                         run), "pin apache-airflow==${AIRFLOW_VERSION} in the same pip install"
    copied = " ".join(line for line in lines if line.startswith(("COPY ", "ADD ")))
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for pkg in [p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]]:
        assert pkg in copied, f"Dockerfile.airflow does not copy {pkg}"
    assert "pyproject.toml" in copied
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] == "airflow", "the image must end as the airflow user"


def test_airflow_dockerfile_owns_the_view_directory(airflow_services: dict[str, dict[str, Any]]) -> None:
    # An empty named volume takes the image directory's owner: the view's directory must exist
    # in the image and belong to airflow, or the materializer cannot write the view.
    view_dir = posixpath.dirname(xcombus_env(airflow_services, "materializer")["XCOMBUS_VIEW_PATH"])
    runs = " ".join(line for line in _dockerfile(AIRFLOW_DOCKERFILE) if line.startswith("RUN "))
    assert re.search(rf"mkdir\s+(-\S+\s+)*(\S+\s+)*{re.escape(view_dir)}(\s|$)", runs), f"mkdir -p {view_dir}"
    owned = [m for m in re.finditer(r"chown\s+((?:-\S+\s+)*)airflow\S*\s+([^&;|]+)", runs)]
    assert any(view_dir == path or (view_dir.startswith(path.rstrip("/") + "/") and "-R" in m.group(1))
               for m in owned for path in m.group(2).split()), f"chown {view_dir} to airflow"
