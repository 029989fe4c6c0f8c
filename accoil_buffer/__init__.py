"""accoil-buffer: a local-first, durable event buffer for Accoil product analytics."""

from importlib import metadata as _metadata

from accoil_buffer.buffer import Buffer
from accoil_buffer.config import Config, ServerConfig, load_config
from accoil_buffer.errors import (
    AccoilBufferError,
    BufferClosed,
    BufferFull,
    ConfigError,
    DeliveryFailed,
    InvalidMessage,
    SchemaError,
    StorageError,
    TriggerError,
)
from accoil_buffer.reports import FlushReport, Health, IngestReport, Rejection
from accoil_buffer.status import Status

try:
    __version__ = _metadata.version("accoil-buffer")
except _metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "AccoilBufferError",
    "Buffer",
    "BufferClosed",
    "BufferFull",
    "Config",
    "ConfigError",
    "DeliveryFailed",
    "FlushReport",
    "Health",
    "IngestReport",
    "InvalidMessage",
    "Rejection",
    "SchemaError",
    "ServerConfig",
    "Status",
    "StorageError",
    "TriggerError",
    "__version__",
    "load_config",
]
