from __future__ import annotations

import pytest

from xcombus import Settings, XComConfigError


def test_env_then_overrides() -> None:
    env = {"XCOMBUS_TOPIC": "from.env", "XCOMBUS_PARTITIONS": "4", "XCOMBUS_PUSH_TIMEOUT": "2.5"}
    s = Settings.from_env(env, view_path="/tmp/v.db")
    assert (s.topic, s.partitions, s.push_timeout, s.view_path) == ("from.env", 4, 2.5, "/tmp/v.db")
    assert Settings.from_env(env, topic="kw").topic == "kw"


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.bootstrap_servers == "127.0.0.1:9092"
    assert s.topic == "xcombus.xcom"
    assert s.view_path == "xcombus.db"
    assert s.xcom_backend == "xcombus.backends.MsgspecXCom"
    assert s.compression == "zstd"


@pytest.mark.parametrize("env", [{"XCOMBUS_PARTITIONS": "many"}, {"XCOMBUS_TOPIC": "bad topic"},
                                 {"XCOMBUS_BOOTSTRAP_SERVERS": "nohostport"},
                                 {"XCOMBUS_PULL_TIMEOUT": "0"}, {"XCOMBUS_CONSISTENCY": "maybe"},
                                 {"XCOMBUS_COMPRESSION": "brotli"}])
def test_bad_settings_are_clear_errors(env: dict[str, str]) -> None:
    with pytest.raises(XComConfigError):
        Settings.from_env(env)


def test_unknown_override_is_refused() -> None:
    with pytest.raises(XComConfigError, match="unknown setting"):
        Settings.from_env({}, topik="x")


def test_group_id_defaults_to_one_group_per_view_file() -> None:
    a = Settings.from_env({}, view_path="/tmp/a.db").effective_group_id
    b = Settings.from_env({}, view_path="/tmp/b.db").effective_group_id
    assert a != b and a.startswith("xcombus-view-")
    assert Settings.from_env({"XCOMBUS_GROUP_ID": "g"}).effective_group_id == "g"


async def test_a_codec_without_its_library_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiokafka import AIOKafkaProducer

    from xcombus.producer import Publisher

    monkeypatch.setitem(AIOKafkaProducer._COMPRESSORS, "zstd",
                        (lambda: False, AIOKafkaProducer._COMPRESSORS["zstd"][1]))
    with pytest.raises(XComConfigError, match=r"XCOMBUS_COMPRESSION=zstd .*not found.*aiokafka\[zstd\]"):
        Publisher(Settings.from_env({}))._new_producer()
