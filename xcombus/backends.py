"""XCom backends: how a value becomes the bytes carried by a push event, and back.

As in Airflow, a backend is a subclass of :class:`BaseXCom` that overrides
``serialize_value`` / ``deserialize_value`` (and ``orm_deserialize_value`` for light
listings, ``purge`` for external payloads). The class is chosen with the ``xcom_backend``
setting (a dotted path) and loaded once per process by :func:`load_backend`, which also
hands it the settings; every component (pushers, the materializer, readers, the CLI) loads
the same one.

Built in:

- :class:`MsgspecXCom` (the default): typed JSON (see :mod:`xcombus.serde`), exact round
  trips of datetimes, decimals, tuples, sets, bytes, dataclasses, Structs...;
- :class:`ObjectStorageXCom`: the same, but values above a size threshold are written to
  object storage (any fsspec URL; a local directory by default), optionally compressed, and
  the event carries only a reference.

Both also read :data:`AIRFLOW_SERDE_CODEC`: values that xcombus's typed JSON refuses
(a pendulum datetime, a pandas frame...) but Apache Airflow's own serializer accepts, which
:mod:`xcombus.airflow` pushes that way so that unchanged DAGs keep working. Reading such a
value needs Airflow installed; listings show its JSON without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import importlib
import json
import logging
import posixpath
import re
import uuid
from collections.abc import Collection, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

import msgspec

from .errors import XComConfigError, XComNotFoundError, XComSerializationError, XComUnsupportedTypeError
from .records import XComRecord
from .serde import TAG, VALUE, Serde, SerdeError

if TYPE_CHECKING:
    from .settings import Settings

__all__ = ["AIRFLOW_SERDE_CODEC", "BaseXCom", "MsgspecXCom", "ObjectRef", "ObjectStorageXCom",
           "backend_purges", "load_backend", "purge_payloads", "resolve_backend"]

log = logging.getLogger(__name__)


class BaseXCom:
    """Base class of XCom backends; subclass it and override the ``*_value`` methods.

    ``codec`` names the format a backend writes; it travels with every push, so a reader
    refuses bytes written by a backend it does not know instead of misreading them.
    Set ``does_io = True`` when (de)serializing touches the network or disk: xcombus then
    calls those methods in a worker thread so the event loop keeps running.
    """

    codec: ClassVar[str] = "msgspec-json/1"
    #: More codecs this backend can read besides its own.
    readable_codecs: ClassVar[frozenset[str]] = frozenset()
    does_io: ClassVar[bool] = False

    @classmethod
    def configure(cls, settings: Settings) -> None:
        """Receive the settings once per process; raise XComConfigError if unusable."""

    @classmethod
    def can_read(cls, codec: str) -> bool:
        """True when ``deserialize_value`` understands values written with ``codec``."""
        return codec == cls.codec or codec in cls.readable_codecs

    @classmethod
    def check_stored(cls, value: bytes, codec: str) -> None:
        """Cheaply check a push's bytes (of a codec this backend reads) before the
        materializer stores them; raise ValueError to dead-letter the event instead.
        The default accepts everything."""

    @classmethod
    def serialize_value(
        cls,
        value: Any,
        *,
        key: str | None = None,
        task_id: str | None = None,
        dag_id: str | None = None,
        run_id: str | None = None,
        map_index: int | None = None,
    ) -> bytes:
        """Turn a value into the bytes stored in the event; raise XComSerializationError."""
        raise NotImplementedError

    @classmethod
    def offload(cls, data: bytes, *, key: str | None = None, task_id: str | None = None,
                dag_id: str | None = None, run_id: str | None = None,
                map_index: int | None = None) -> bytes:
        """Store bytes already serialized (by this backend or another codec) where this
        backend keeps large values; return what the event carries. The default keeps them
        inline."""
        return data

    @classmethod
    def deserialize_value(cls, result: XComRecord) -> Any:
        """Turn a stored record back into the value."""
        raise NotImplementedError

    @classmethod
    def orm_deserialize_value(cls, result: XComRecord) -> Any:
        """A light form for listings and UIs; must not fetch remote payloads."""
        return cls.deserialize_value(result)

    @classmethod
    def purge(cls, result: XComRecord) -> None:
        """Remove externally stored data of a record that was cleared or replaced."""


#: The codec of values serialized by Apache Airflow's own serde (its JSON envelope of
#: ``__classname__`` / ``__data__`` objects), written by :mod:`xcombus.airflow`.
AIRFLOW_SERDE_CODEC = "airflow-serde/1"


def airflow_serde_loads(result: XComRecord) -> Any:
    """Rebuild a value written with :data:`AIRFLOW_SERDE_CODEC`, with Airflow's own serde
    (and its ``allowed_deserialization_classes``)."""
    try:
        from airflow.sdk.serde import deserialize  # type: ignore[import-not-found, unused-ignore]  # Airflow 3
    except ImportError:
        try:
            # Airflow 2
            from airflow.utils.json import XComDecoder  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            raise XComSerializationError(
                f"{_xcom_name(result)} was written by Apache Airflow's serializer (codec "
                f"{AIRFLOW_SERDE_CODEC}): read it where apache-airflow is installed") from None
        try:
            return json.loads(result.value, cls=XComDecoder)
        except (ValueError, TypeError, ImportError) as exc:
            raise XComSerializationError(f"cannot deserialize {_xcom_name(result)} with Airflow's "
                                         f"serde: {exc}") from exc
    try:
        return deserialize(json.loads(result.value))
    except (ValueError, TypeError, ImportError, KeyError, AttributeError) as exc:
        raise XComSerializationError(f"cannot deserialize {_xcom_name(result)} with Airflow's serde: "
                                     f"{exc}") from exc


def _xcom_name(result: XComRecord) -> str:
    return (f"XCom {result.key!r} of {result.dag_id}/{result.run_id}/{result.task_id}"
            f"[{result.map_index}]")


class MsgspecXCom(BaseXCom):
    """The default backend: typed JSON written by msgspec, readable by any JSON tool.

    Refuses, at push time, any value it could not give back exactly, naming the key and
    the type; rebuilds classes only when allowed (``allowed_deserialization_classes``).
    """

    codec: ClassVar[str] = "msgspec-json/1"
    readable_codecs: ClassVar[frozenset[str]] = frozenset({AIRFLOW_SERDE_CODEC})
    _serde: ClassVar[Serde] = Serde()

    @classmethod
    def configure(cls, settings: Settings) -> None:
        cls._serde = Serde(settings.allowed_class_patterns)

    @classmethod
    def check_stored(cls, value: bytes, codec: str) -> None:
        try:
            _json_check.decode(value)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"the value is not valid JSON: {exc}") from None

    @classmethod
    def serialize_value(cls, value: Any, *, key: str | None = None, task_id: str | None = None,
                        dag_id: str | None = None, run_id: str | None = None,
                        map_index: int | None = None, **_: Any) -> bytes:
        # The identity is spelled out (Airflow's signature) rather than left to ``**_``:
        # collecting it into a dict would cost every push.
        try:
            return cls._serde.dumps(value)
        except SerdeError as exc:
            raise XComUnsupportedTypeError(
                f"cannot serialize XCom {key!r} (a {type(value).__module__}."
                f"{type(value).__qualname__}) with {cls.__name__}: {exc}") from None

    @classmethod
    def _tree(cls, result: XComRecord) -> Any:
        if not cls.can_read(result.codec):
            raise XComSerializationError(
                f"{_xcom_name(result)} was written with codec {result.codec!r}, which "
                f"{cls.__name__} cannot read: configure the backend that wrote it")
        try:
            return msgspec.json.decode(result.value)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise XComSerializationError(f"{_xcom_name(result)} is not valid JSON: {exc}") from None

    @classmethod
    def _rebuild(cls, result: XComRecord, tree: Any) -> Any:
        try:
            return cls._serde.from_builtins(tree)
        except SerdeError as exc:
            raise XComSerializationError(f"cannot deserialize {_xcom_name(result)}: {exc}") from None

    @classmethod
    def orm_deserialize_value(cls, result: XComRecord) -> Any:
        if result.codec == AIRFLOW_SERDE_CODEC:  # Airflow's JSON as it is: no Airflow needed
            return cls._tree(result)
        return cls.deserialize_value(result)

    @classmethod
    def deserialize_value(cls, result: XComRecord) -> Any:
        tree = cls._tree(result)
        if ObjectRef.is_ref(tree):
            raise XComSerializationError(
                f"{_xcom_name(result)} is stored in object storage: set XCOMBUS_XCOM_BACKEND="
                "xcombus.backends.ObjectStorageXCom to read it")
        if result.codec == AIRFLOW_SERDE_CODEC:
            return airflow_serde_loads(result)
        return cls._rebuild(result, tree)


# Only checks the bytes are JSON: Raw leaves the document unparsed beyond its syntax.
_json_check = msgspec.json.Decoder(msgspec.Raw)


class ObjectRef(msgspec.Struct, frozen=True):
    """Where an offloaded value lives; what the event carries instead of the value."""

    url: str
    size: int
    sha256: str
    compression: str = ""

    TAG: ClassVar[str] = "xcombus.objref"

    @classmethod
    def is_ref(cls, tree: Any) -> bool:
        """Whether a decoded JSON value is a reference (not an inline value)."""
        return type(tree) is dict and tree.get(TAG) == cls.TAG

    def to_bytes(self) -> bytes:
        """The reference as the stored value (tagged JSON)."""
        return msgspec.json.encode({TAG: self.TAG, VALUE: self})

    @classmethod
    def from_tree(cls, tree: dict[str, Any]) -> ObjectRef:
        """The reference inside a decoded value that :meth:`is_ref` accepted."""
        return msgspec.convert(tree[VALUE], cls)


_SUFFIX = {"": "", "gzip": ".gz", "zstd": ".zst"}
_OBJECT_NAME = re.compile(r"[0-9a-f]{32}\.json(\.gz|\.zst)?")


def _safe_part(part: object) -> str:
    """One path segment built from an id: no separators, no '.'/'..', nothing absolute."""
    text = quote(str(part), safe="-_=+:@~")  # '/', '\\' and '%' are escaped
    if text in ("", ".", ".."):
        text = text.replace(".", "%2E") or "%00"
    return text


class ObjectStorageXCom(MsgspecXCom):
    """Typed JSON like :class:`MsgspecXCom`, with large values offloaded to object storage.

    Values whose serialized size is above ``object_storage_threshold`` bytes (``-1`` never,
    ``0`` always) are written, compressed if asked, under ``object_storage_path`` (an fsspec
    URL such as ``s3://bucket/xcom`` or a local directory) at
    ``<dag>/<run>/<task>/<map_index>/<key>/<uuid>.json[.gz|.zst]``; the event carries the
    :class:`ObjectRef`. Listings show the reference without reading the object; ``purge``
    deletes it when the XCom is cleared or replaced.
    """

    does_io: ClassVar[bool] = True
    _base: ClassVar[str] = "xcombus-objects"
    _threshold: ClassVar[int] = 65_536
    _compression: ClassVar[str] = ""
    _fs: ClassVar[Any] = None

    @classmethod
    def configure(cls, settings: Settings) -> None:
        super().configure(settings)
        try:
            from fsspec.core import url_to_fs
        except ImportError as exc:
            raise XComConfigError(
                "ObjectStorageXCom needs fsspec: pip install 'xcombus[objstore]'") from exc
        if settings.object_storage_compression == "zstd":
            try:
                import zstandard  # noqa: F401
            except ImportError as exc:
                raise XComConfigError(
                    "object_storage_compression=zstd needs zstandard: pip install "
                    "'xcombus[objstore]'") from exc
        try:
            fs, root = url_to_fs(settings.object_storage_path)
        except (ValueError, ImportError) as exc:
            raise XComConfigError(
                f"object_storage_path {settings.object_storage_path!r} is not usable: {exc}") from exc
        cls._fs, cls._base = fs, root.rstrip("/") or "/"
        cls._threshold = settings.object_storage_threshold
        cls._compression = settings.object_storage_compression

    @classmethod
    def _compress(cls, data: bytes) -> bytes:
        if cls._compression == "gzip":
            return gzip.compress(data, compresslevel=6)
        if cls._compression == "zstd":
            import zstandard
            return zstandard.ZstdCompressor().compress(data)
        return data

    @staticmethod
    def _decompress(data: bytes, compression: str) -> bytes:
        if compression == "gzip":
            return gzip.decompress(data)
        if compression == "zstd":
            import zstandard
            return zstandard.ZstdDecompressor().decompress(data)
        if compression:
            raise XComSerializationError(f"unknown compression {compression!r}")
        return data

    @classmethod
    def _inside_base(cls, path: str) -> bool:
        root = posixpath.normpath(cls._base).rstrip("/") + "/"
        return posixpath.normpath(path).startswith(root) and ".." not in path.split("/")

    @classmethod
    def object_path(cls, *, dag_id: Any, run_id: Any, task_id: Any, map_index: Any, key: Any) -> str:
        """Where a new object for this XCom goes; every part is sanitised."""
        parts = [_safe_part(p) for p in (dag_id, run_id, task_id, map_index, key)]
        path = posixpath.join(cls._base, *parts, f"{uuid.uuid4().hex}.json{_SUFFIX[cls._compression]}")
        if not cls._inside_base(path):
            raise XComSerializationError(f"refusing object path {path!r} outside {cls._base!r}")
        return path

    @classmethod
    def _local_path(cls, ref: ObjectRef) -> str:
        """The storage path of a reference read from the topic, refused unless it is one of
        ours: under the configured base and named like the objects this backend writes.
        (Anyone who can write to the topic could otherwise make readers read, and the
        materializer delete, any file.)"""
        path: str = cls._fs._strip_protocol(ref.url)
        if not (cls._inside_base(path) and _OBJECT_NAME.fullmatch(posixpath.basename(path))):
            raise XComSerializationError(
                f"refusing object reference {ref.url!r}: not an object of {cls._base!r}")
        return path

    @classmethod
    def serialize_value(cls, value: Any, *, key: str | None = None, task_id: str | None = None,
                        dag_id: str | None = None, run_id: str | None = None,
                        map_index: int | None = None, **_: Any) -> bytes:
        return cls.offload(super().serialize_value(value, key=key), key=key, task_id=task_id,
                           dag_id=dag_id, run_id=run_id, map_index=map_index)

    @classmethod
    def offload(cls, data: bytes, *, key: str | None = None, task_id: str | None = None,
                dag_id: str | None = None, run_id: str | None = None,
                map_index: int | None = None) -> bytes:
        """Above the threshold, write ``data`` to object storage and return its reference."""
        inline = cls._threshold < 0 or (cls._threshold > 0 and len(data) <= cls._threshold)
        if inline:
            return data
        if cls._fs is None:
            raise XComConfigError("ObjectStorageXCom is not configured (load it with load_backend)")
        path = cls.object_path(dag_id=dag_id, run_id=run_id, task_id=task_id,
                               map_index=map_index, key=key)
        blob = cls._compress(data)
        try:
            cls._fs.makedirs(posixpath.dirname(path), exist_ok=True)
            with cls._fs.open(path, "wb") as f:
                f.write(blob)
        except OSError as exc:
            raise XComSerializationError(
                f"cannot write XCom {key!r} to object storage at {path}: {exc}") from exc
        url = cls._fs.unstrip_protocol(path)
        return ObjectRef(url, len(data), hashlib.sha256(data).hexdigest(), cls._compression).to_bytes()

    @classmethod
    def deserialize_value(cls, result: XComRecord) -> Any:
        tree = cls._tree(result)
        if not ObjectRef.is_ref(tree):
            if result.codec == AIRFLOW_SERDE_CODEC:
                return airflow_serde_loads(result)
            return cls._rebuild(result, tree)
        ref = ObjectRef.from_tree(tree)
        try:
            with cls._fs.open(cls._local_path(ref), "rb") as f:
                blob = f.read()
        except FileNotFoundError as exc:
            raise XComNotFoundError(
                f"the payload of {_xcom_name(result)} is missing from object storage ({ref.url}): "
                "it was purged or deleted by hand") from exc
        except OSError as exc:
            raise XComSerializationError(f"cannot read {ref.url} for {_xcom_name(result)}: {exc}") from exc
        data = cls._decompress(blob, ref.compression)
        if hashlib.sha256(data).hexdigest() != ref.sha256:
            raise XComSerializationError(f"the payload of {_xcom_name(result)} at {ref.url} is corrupt "
                                         "(its SHA-256 does not match the reference)")
        if result.codec == AIRFLOW_SERDE_CODEC:  # Airflow's serde wrote the payload
            return airflow_serde_loads(result._replace(value=data))
        try:
            tree = msgspec.json.decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise XComSerializationError(f"the payload of {_xcom_name(result)} is not JSON: {exc}") from None
        return cls._rebuild(result, tree)

    @classmethod
    def check_stored(cls, value: bytes, codec: str) -> None:
        super().check_stored(value, codec)
        tree = msgspec.json.decode(value)
        if ObjectRef.is_ref(tree):
            try:
                cls._local_path(ObjectRef.from_tree(tree))
            except (XComSerializationError, msgspec.ValidationError) as exc:
                raise ValueError(str(exc)) from None

    @classmethod
    def orm_deserialize_value(cls, result: XComRecord) -> Any:
        tree = cls._tree(result)
        if ObjectRef.is_ref(tree):
            ref = ObjectRef.from_tree(tree)
            return f"<object {ref.url} ({ref.size} bytes)>"
        return cls._rebuild(result, tree)

    @classmethod
    def reference(cls, result: XComRecord) -> ObjectRef | None:
        """The object reference of a record, or None for an inline value."""
        tree = cls._tree(result)
        return ObjectRef.from_tree(tree) if ObjectRef.is_ref(tree) else None

    @classmethod
    def purge(cls, result: XComRecord) -> None:
        """Delete the record's object from storage (inline values have none)."""
        ref = cls.reference(result)
        if ref is not None:
            path = cls._local_path(ref)
            with contextlib.suppress(FileNotFoundError):
                cls._fs.rm(path)


@cache
def resolve_backend(dotted_path: str) -> type[BaseXCom]:
    """Import the backend class named by a dotted path; fail clearly at start-up."""
    module_name, _, attr = dotted_path.rpartition(".")
    if not module_name or not attr:
        raise XComConfigError(
            f"XCOMBUS_XCOM_BACKEND {dotted_path!r} is not a dotted path like 'package.module.Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise XComConfigError(
            f"XCOMBUS_XCOM_BACKEND {dotted_path!r}: module {module_name!r} cannot be imported ({exc}); "
            "install it in every image that pushes, pulls or materializes, or unset it for the "
            "default xcombus.backends.MsgspecXCom") from exc
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseXCom)):
        raise XComConfigError(
            f"XCOMBUS_XCOM_BACKEND {dotted_path!r} is not a subclass of xcombus.BaseXCom: it names "
            "the codec xcombus writes values with (default xcombus.backends.MsgspecXCom); "
            "Airflow's own setting is AIRFLOW__CORE__XCOM_BACKEND=xcombus.airflow.XComBusBackend")
    return cls


def load_backend(settings: Settings) -> type[BaseXCom]:
    """The configured backend class, resolved and configured with these settings."""
    cls = resolve_backend(settings.xcom_backend)
    cls.configure(settings)
    return cls


# -- payloads of replaced values ----------------------------------------------------

def backend_purges(backend: type[BaseXCom]) -> bool:
    """True when the backend overrides ``purge``: the rows a write replaces must then be
    collected, so their external payloads can be freed after the commit."""
    return backend.purge.__func__ is not BaseXCom.purge.__func__  # type: ignore[attr-defined]


async def purge_payloads(backend: type[BaseXCom], records: Sequence[XComRecord], *,
                        keep: Collection[bytes] = ()) -> None:
    """Remove the external payloads of records no row refers to any more.

    Call it only after the transaction that dropped them committed: a crash before the
    commit must not delete payloads still referenced. ``keep``: stored values of rows that
    stay (a duplicate of an event carries the same reference; its payload stays). A
    failure is logged, not raised: the view is already right, and an orphaned payload is
    only wasted space.
    """
    def run() -> None:
        for rec in records:
            if rec.value in keep:
                continue
            try:
                backend.purge(rec)
            except Exception:
                log.exception("purging the payload of %s/%s/%s[%d] %r failed", rec.dag_id,
                              rec.run_id, rec.task_id, rec.map_index, rec.key)

    if records and backend.does_io:
        await asyncio.to_thread(run)
    elif records:
        run()
