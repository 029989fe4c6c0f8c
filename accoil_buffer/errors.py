"""The exceptions accoil-buffer raises, all under one base class.

    AccoilBufferError
    ├── ConfigError        a configuration key has a bad value (names the key)
    │   └── TriggerError   a mapping's trigger does not parse (names the position)
    ├── ListenError        the sidecar cannot bind its address (the port is taken)
    ├── InvalidMessage     a call or message breaks the Segment spec (names the field);
    │                      nothing of it was stored
    ├── SchemaError        the database schema is behind (names `accoil-buffer migrate`)
    │                      or ahead of this version
    └── StorageError       the database failed; wraps the driver error (``__cause__``)
        ├── BufferFull     a backpressure bound is reached (nothing was stored)
        └── BufferClosed   the Buffer is closed and takes no more calls

Driver errors are wrapped with ``raise ... from exc`` so the original stays visible.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import SQLAlchemyError


class AccoilBufferError(Exception):
    """Base class of every error raised by accoil-buffer."""


class ConfigError(AccoilBufferError):
    """A configuration value is missing, unknown or of the wrong type."""


class TriggerError(ConfigError):
    """A trigger expression could not be parsed; ``position`` is 0-based into ``text``."""

    def __init__(self, text: str, position: int, problem: str, where: str = "trigger") -> None:
        super().__init__(
            f"{where}: {problem} at position {position + 1}\n    {text}\n    {' ' * position}^"
        )
        self.text, self.position, self.problem = text, position, problem


class ListenError(AccoilBufferError):
    """The sidecar daemon cannot listen on its host and port."""


class InvalidMessage(AccoilBufferError, ValueError):
    """A message was rejected; ``field`` names the offending part of it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class DeliveryFailed(AccoilBufferError):
    """Accoil could not be reached, or answered that it cannot take messages now (a 5xx, a
    429): what was asked stays to be sent again later."""


class SchemaError(AccoilBufferError):
    """The database schema does not match this version of accoil-buffer."""


class StorageError(AccoilBufferError):
    """The database could not complete an operation."""


class BufferFull(StorageError):
    """A bound (``max_outbox_rows``, ``max_outbox_bytes``, or the writer's queue while the
    database fails) is reached; the call was refused, not dropped."""


class BufferClosed(StorageError):
    """The Buffer was closed: a call made after ``close()`` is refused, not queued."""


@contextmanager
def storage_errors(failure: str = "the database failed") -> Iterator[None]:
    """Raise a driver error as ``StorageError``: ``failure``, then the error's first line."""
    try:
        yield
    except SQLAlchemyError as exc:
        first_line = str(exc).splitlines()[0]
        raise StorageError(f"{failure}: {exc.__class__.__name__}: {first_line}") from exc
