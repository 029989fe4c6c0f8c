"""accoil-buffer: a local-first, durable event buffer for Accoil product analytics."""

from accoil_buffer.buffer import Buffer, FlushReport, IngestReport, Rejection
from accoil_buffer.config import Config, ServerConfig, load_config
from accoil_buffer.errors import (
    AccoilBufferError,
    BufferFull,
    ConfigError,
    InvalidMessage,
    SchemaError,
    StorageError,
)

__all__ = [
    "AccoilBufferError",
    "Buffer",
    "BufferFull",
    "Config",
    "ConfigError",
    "FlushReport",
    "IngestReport",
    "InvalidMessage",
    "Rejection",
    "SchemaError",
    "ServerConfig",
    "StorageError",
    "load_config",
]
