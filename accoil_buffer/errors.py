"""The exceptions accoil-buffer raises, all under one base class.

    AccoilBufferError
    ├── ConfigError        a configuration key has a bad value (names the key)
    ├── ListenError        the sidecar cannot bind its address (the port is taken)
    ├── InvalidMessage     a call or message breaks the Segment spec (names the field);
    │                      nothing of it was stored
    ├── SchemaError        the database schema is behind (names `accoil-buffer migrate`)
    │                      or ahead of this version
    └── StorageError       the database failed; wraps the driver error (``__cause__``)
        └── BufferFull     the outbox is at max_outbox_rows (backpressure; nothing was stored)

Driver errors are wrapped with ``raise ... from exc`` so the original stays visible.
"""

from __future__ import annotations


class AccoilBufferError(Exception):
    """Base class of every error raised by accoil-buffer."""


class ConfigError(AccoilBufferError):
    """A configuration value is missing, unknown or of the wrong type."""


class ListenError(AccoilBufferError):
    """The sidecar daemon cannot listen on its host and port."""


class InvalidMessage(AccoilBufferError, ValueError):
    """A message was rejected; ``field`` names the offending part of it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class SchemaError(AccoilBufferError):
    """The database schema does not match this version of accoil-buffer."""


class StorageError(AccoilBufferError):
    """The database could not complete an operation."""


class BufferFull(StorageError):
    """The outbox holds ``max_outbox_rows`` messages; the call was refused, not dropped."""
