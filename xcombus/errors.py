"""The exceptions xcombus raises, one tree under :class:`XComBusError`.

    XComBusError
    ├── XComConfigError (ValueError)        a setting or a backend class is wrong
    ├── XComIdentifierError (ValueError)    a dag/run/task id, map index or key is invalid
    ├── XComSerializationError (TypeError)  a value cannot be (de)serialized by the backend
    │   └── XComUnsupportedTypeError        the codec has no representation for a value's type
    ├── XComValueTooLargeError (ValueError) a serialized value is above the inline limit
    ├── XComNotFoundError (LookupError)     a lookup or a stored payload found nothing
    ├── XComQueryError (ValueError)         a lookup's filter, order or page is invalid
    ├── XComBrokerError                     the broker is unreachable or refused a request
    │   ├── XComPublishError                a push was not acknowledged
    │   └── XComConnectTimeoutError         Kafka did not answer a client's start in time
    │                                       (also an XComTimeoutError)
    ├── XComTimeoutError (TimeoutError)     a bounded wait ran out (push, pull, start-up)
    ├── XComViewError                       the SQLite view is missing, locked or unusable
    │   ├── XComViewLockedError             another materializer already writes that file
    │   └── ViewNotReadyError               no view file (or schema) yet: a waiting read
    │                                       keeps polling
    └── XComClosedError (RuntimeError)      the bus was used after it was closed

Messages say what to do next. Lower-level errors (aiokafka, sqlite3, msgspec) are
translated where they are caught, with ``raise ... from exc`` so the cause stays visible;
a Kafka client's start-up is translated in one place, ``connection.started``.
"""

from __future__ import annotations

__all__ = [
    "ViewNotReadyError",
    "XComBrokerError",
    "XComBusError",
    "XComClosedError",
    "XComConfigError",
    "XComConnectTimeoutError",
    "XComIdentifierError",
    "XComNotFoundError",
    "XComPublishError",
    "XComQueryError",
    "XComSerializationError",
    "XComTimeoutError",
    "XComUnsupportedTypeError",
    "XComValueTooLargeError",
    "XComViewError",
    "XComViewLockedError",
]


class XComBusError(Exception):
    """Root of every error raised by xcombus."""


class XComConfigError(XComBusError, ValueError):
    """A setting, option or configured class is invalid."""


class XComIdentifierError(XComBusError, ValueError):
    """A dag_id, run_id, task_id, map_index or key is not valid."""


class XComSerializationError(XComBusError, TypeError):
    """The configured backend cannot serialize or deserialize a value."""


class XComUnsupportedTypeError(XComSerializationError):
    """The backend's codec has no representation for a value's type (as opposed to a
    failure while storing it): another codec may still carry the value."""


class XComValueTooLargeError(XComBusError, ValueError):
    """A serialized value is larger than the inline limit."""


class XComNotFoundError(XComBusError, LookupError):
    """No XCom matches the lookup."""


class XComQueryError(XComBusError, ValueError):
    """A lookup's filter, order or page is invalid."""


class XComBrokerError(XComBusError):
    """The Kafka broker could not be reached or refused a request."""


class XComPublishError(XComBrokerError):
    """A push was not acknowledged by the broker; it may be retried."""


class XComTimeoutError(XComBusError, TimeoutError):
    """A bounded wait ran out before the awaited condition held."""


class XComViewError(XComBusError):
    """The SQLite view is missing, locked, read-only or has an unexpected schema."""


class XComConnectTimeoutError(XComBrokerError, XComTimeoutError):
    """A Kafka client could not start within ``connect_timeout``: the broker is unreachable
    (a broker error) and a bounded wait ran out (a timeout), so both kinds of handler see it."""


class XComViewLockedError(XComViewError):
    """Another materializer holds the write lock on the same view file."""


class ViewNotReadyError(XComViewError):
    """The view file (or its tables) does not exist yet: a materializer starting up creates
    them, so a bounded wait (read-your-writes) keeps polling instead of failing."""


class XComClosedError(XComBusError, RuntimeError):
    """The bus (or one of its resources) was used after it was closed."""
