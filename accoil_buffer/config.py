"""Configuration: one typed object, built from a TOML file, then the environment, then arguments.

Every key is documented in ``config.example.toml``. A key's environment variable is
``ACCOIL_BUFFER_<KEY>`` (``ACCOIL_BUFFER_SERVER_PORT`` for ``[server] port``), except the API
key, which is ``ACCOIL_API_KEY``. ``ACCOIL_BUFFER_CONFIG`` names the file.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from accoil_buffer.errors import ConfigError
from accoil_buffer.mappings import PRESETS, Mappings

DEFAULT_DATABASE_URL = "sqlite:///accoil_buffer.db"
CONFIG_FILE_VARIABLE = "ACCOIL_BUFFER_CONFIG"
SqliteSynchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]
Durability = Literal["sync", "group"]


@dataclass(frozen=True)
class ServerConfig:
    """The ``[server]`` table: where the sidecar daemon listens and who may write to it."""

    host: str = "127.0.0.1"
    port: int = 8740
    write_keys: tuple[str, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class Config:
    """Every setting of accoil-buffer; ``api_key`` is left out of ``repr`` so no log shows it."""

    api_key: str | None = field(default=None, repr=False)
    database_url: str = DEFAULT_DATABASE_URL
    endpoint: str | None = None
    auto_migrate: bool = True
    flush_interval_seconds: float = 60.0
    anonymous_ttl_days: int = 30
    future_timestamp_margin_seconds: float = 300.0
    dedupe_window_hours: float = 24.0
    outbox_retention_hours: float = 0.0
    fold_batch_size: int = 0  # 0: the database's own (Database.fold_batch_size)
    sqlite_synchronous: SqliteSynchronous = "FULL"
    sqlite_busy_timeout_seconds: float = 30.0
    max_in_flight: int = 64
    request_timeout_seconds: float = 10.0
    max_backoff_seconds: float = 300.0
    claim_lease_seconds: float = 60.0
    durability: Durability = "group"
    close_timeout_seconds: float = 5.0
    max_outbox_rows: int = 1_000_000
    max_outbox_bytes: int = 0
    backpressure_timeout_seconds: float = 0.0
    mappings: Mappings = PRESETS
    server: ServerConfig = field(default_factory=ServerConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.mappings, Mappings):  # a list of tables, as in the TOML file
            object.__setattr__(self, "mappings", Mappings.load(self.mappings))
        positive = (
            "flush_interval_seconds",
            "anonymous_ttl_days",
            "sqlite_busy_timeout_seconds",
            "max_in_flight",
            "request_timeout_seconds",
            "max_backoff_seconds",
            "claim_lease_seconds",
            "close_timeout_seconds",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be greater than 0, got {getattr(self, name)!r}")
        for name in (
            "fold_batch_size",
            "max_outbox_rows",
            "max_outbox_bytes",
            "backpressure_timeout_seconds",
            "future_timestamp_margin_seconds",
            "dedupe_window_hours",
            "outbox_retention_hours",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)!r}")
        if self.durability not in get_args(Durability):
            raise ConfigError(
                f"durability must be one of {get_args(Durability)}, got {self.durability!r}"
            )
        if self.sqlite_synchronous not in get_args(SqliteSynchronous):
            raise ConfigError(
                f"sqlite_synchronous must be one of {get_args(SqliteSynchronous)}, "
                f"got {self.sqlite_synchronous!r}"
            )
        if not 0 < self.server.port < 65536:
            raise ConfigError(f"server.port must be between 1 and 65535, got {self.server.port}")


def load_config(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build a Config from the file (``path`` or ``$ACCOIL_BUFFER_CONFIG``), the environment, then
    ``overrides`` (flags or keyword arguments; ``None`` values are ignored; ``server.port`` style
    keys address the ``[server]`` table)."""
    environ = os.environ if environ is None else environ
    path = path or environ.get(CONFIG_FILE_VARIABLE)
    values: dict[str, Any] = {}
    if path:
        values.update(_flatten(_read_toml(Path(path))))
    values.update(_from_environment(environ))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return _build(values)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"configuration file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from exc


def _flatten(document: Mapping[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in document.items():
        if key == "server" and isinstance(value, Mapping):
            flat.update({f"server.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


# Keys that only a file (or Python) can give: a list of tables has no environment spelling.
_FILE_ONLY = frozenset({"mappings"})


def _known_keys() -> dict[str, type | Any]:
    keys: dict[str, Any] = {f.name: f.type for f in fields(Config) if f.name != "server"}
    keys.update({f"server.{f.name}": f.type for f in fields(ServerConfig)})
    return keys


def _variable(key: str) -> str:
    if key == "api_key":
        return "ACCOIL_API_KEY"
    return "ACCOIL_BUFFER_" + key.replace(".", "_").upper()


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in _known_keys().keys() - _FILE_ONLY:
        raw = environ.get(_variable(key))
        if raw is not None and raw != "":
            values[key] = raw.split(",") if key == "server.write_keys" else raw
    return values


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Turn a value from TOML, the environment or a flag into the type of the key's default."""
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered in {"1", "true", "yes", "on"}:
                    return True
                if lowered in {"0", "false", "no", "off"}:
                    return False
                raise ValueError(value)
            if isinstance(value, bool):
                return value
            raise TypeError(type(value).__name__)
        if isinstance(default, int | float) and isinstance(value, bool):
            raise TypeError("bool")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, tuple):
            if isinstance(value, str) or not isinstance(value, list | tuple):
                raise TypeError(type(value).__name__)
            return tuple(str(item).strip() for item in value if str(item).strip())
        if isinstance(value, str):
            if key == "sqlite_synchronous":
                return value.upper()
            return value.lower() if key == "durability" else value
        raise TypeError(type(value).__name__)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key} has an invalid value {value!r} ({exc})") from exc


def _build(values: Mapping[str, Any]) -> Config:
    unknown = sorted(set(values) - set(_known_keys()))
    if unknown:
        raise ConfigError(f"unknown configuration key(s): {', '.join(unknown)}")
    top_defaults, server_defaults = Config(), ServerConfig()
    top: dict[str, Any] = {}
    server: dict[str, Any] = {}
    for key, value in values.items():
        if key.startswith("server."):
            name = key.removeprefix("server.")
            server[name] = _coerce(key, value, getattr(server_defaults, name))
        elif key in {"api_key", "endpoint"}:
            top[key] = _coerce(key, value, "") or None
        elif key == "mappings":
            top[key] = value  # a list of tables: Config.__post_init__ compiles it
        else:
            top[key] = _coerce(key, value, getattr(top_defaults, key))
    return dataclasses.replace(top_defaults, server=ServerConfig(**server), **top)
