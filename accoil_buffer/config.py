"""Configuration: one typed object, built from a TOML file, then the environment, then arguments.

Every key is documented in ``config.example.toml``. A key's environment variable is
``ACCOIL_BUFFER_<KEY>`` (``ACCOIL_BUFFER_SERVER_PORT`` for ``[server] port``), except the API
key, which is ``ACCOIL_API_KEY``. ``ACCOIL_BUFFER_CONFIG`` names the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import os
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from accoil_buffer.errors import ConfigError
from accoil_buffer.mappings import PRESETS, Mappings

DEFAULT_DATABASE_URL = "sqlite:///accoil_buffer.db"
MAX_IN_FLIGHT = 1000  # each is a task a pass starts, whether or not there is work for it
ATTEMPTS_PER_PASS = 3  # tries of one message within a pass
MAX_WAIT_IN_PASS_SECONDS = 2.0  # between them; a longer Retry-After ends the pass instead
# A hundred years: a longer duration overflows the clocks and timeouts it is added to.
_LONGEST = timedelta(days=36_500)
_UNITS = frozenset({"seconds", "hours", "days"})
CONFIG_FILE_VARIABLE = "ACCOIL_BUFFER_CONFIG"
SqliteSynchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]
Durability = Literal["sync", "group"]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerConfig:
    """The ``[server]`` table: where the sidecar daemon listens and who may write to it."""

    host: str = "127.0.0.1"
    port: int = 8740
    write_keys: tuple[str, ...] = field(default=(), repr=False)
    cors_origins: tuple[str, ...] = ()  # web pages that may send; none by default
    public_url: str = ""  # how browsers reach the daemon behind a proxy; "": as requested
    tls_certfile: str = ""  # with tls_keyfile: HTTPS, which Segment's mobile libraries need
    tls_keyfile: str = ""


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
                raise ConfigError(f"{name} must be greater than 0")
        for name in (f.name for f in dataclasses.fields(self)):
            unit = name.rsplit("_", 1)[-1]
            # "not <=": NaN is not at most anything either
            if unit in _UNITS and not getattr(self, name) <= _LONGEST / timedelta(**{unit: 1}):
                raise ConfigError(f"{name} must be at most {_LONGEST.days // 365} years")
        if self.endpoint is not None:
            parts = urlsplit(self.endpoint)
            if parts.scheme not in {"http", "https"} or not parts.hostname:
                raise ConfigError("endpoint must be a URL starting http:// or https://")
        # A pass renews its claim as it records answers: the longest one message's tries can
        # take must fit in the lease, or another flusher claims the rows and sends them too.
        longest = ATTEMPTS_PER_PASS * self.request_timeout_seconds + MAX_WAIT_IN_PASS_SECONDS * (
            ATTEMPTS_PER_PASS - 1
        )
        if self.claim_lease_seconds <= longest:
            raise ConfigError(
                f"claim_lease_seconds must be more than {longest:g}: {ATTEMPTS_PER_PASS} tries "
                "of request_timeout_seconds and the waits between them, or another flusher "
                "would send rows still being sent"
            )
        if self.max_in_flight > MAX_IN_FLIGHT:
            raise ConfigError(f"max_in_flight must be at most {MAX_IN_FLIGHT}")
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
                raise ConfigError(f"{name} must not be negative")
        for name, choices in (
            ("durability", Durability),
            ("sqlite_synchronous", SqliteSynchronous),
        ):
            if getattr(self, name) not in get_args(choices):
                raise ConfigError(f"{name} must be one of {', '.join(get_args(choices))}")
        if not 0 < self.server.port < 65536:
            raise ConfigError("server.port must be between 1 and 65535")
        if bool(self.server.tls_certfile) != bool(self.server.tls_keyfile):
            raise ConfigError("server.tls_certfile and server.tls_keyfile go together: set both")


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
        path = Path(path)
        values.update(_flatten(_read_toml(path)))
        folder = path.absolute().parent
        if "database_url" in values:
            values["database_url"] = _beside(folder, values["database_url"])
        for key in ("server.tls_certfile", "server.tls_keyfile"):
            if isinstance(values.get(key), str) and values[key]:
                values[key] = str(folder / values[key])  # beside the file, as database_url
    values.update(_from_environment(environ))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return _build(values)


def sqlite_file(database_url: str) -> Path | None:
    """The file a ``sqlite://`` URL names; None for another database, memory, or no URL at all
    (opening it reports that)."""
    try:
        url = make_url(database_url)
    except (ArgumentError, ValueError):
        return None
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(str(url.database))


def _beside(folder: Path, database_url: object) -> object:
    """A relative SQLite path in a file means beside the file, from whatever folder it is run."""
    if not isinstance(database_url, str):
        return database_url  # _coerce names its type
    path = sqlite_file(database_url)
    if path is None or path.is_absolute():
        return database_url
    url = make_url(database_url).set(database=str(folder / path))
    return url.render_as_string(hide_password=False)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"configuration file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError:
        raise ConfigError(f"configuration file {path} is not UTF-8 text") from None
    except OSError as exc:  # a folder, a file this user may not read
        raise ConfigError(f"configuration file {path} cannot be read: {exc.strerror}") from None


def _flatten(document: Mapping[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in document.items():
        if key != "server":
            flat[key] = value
        elif isinstance(value, Mapping):
            flat.update({f"server.{k}": v for k, v in value.items()})
        else:
            raise ConfigError(f"server must be a table ([server]), got {_kind(value)}")
    return flat


# Keys that only a file (or Python) can give: a list of tables has no environment spelling.
_FILE_ONLY = frozenset({"mappings"})
_VARIABLE_PREFIX = "ACCOIL_BUFFER_"


def _known_keys() -> dict[str, type | Any]:
    keys: dict[str, Any] = {f.name: f.type for f in fields(Config) if f.name != "server"}
    keys.update({f"server.{f.name}": f.type for f in fields(ServerConfig)})
    return keys


def _variable(key: str) -> str:
    if key == "api_key":
        return "ACCOIL_API_KEY"
    return _VARIABLE_PREFIX + key.replace(".", "_").upper()


# Keys whose environment variable is a comma-separated list.
_LISTS = frozenset({"server.write_keys", "server.cors_origins"})


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    variables = {_variable(key): key for key in _known_keys().keys() - _FILE_ONLY}
    _warn_unknown_variables(environ, {*variables, CONFIG_FILE_VARIABLE})
    values: dict[str, Any] = {}
    for variable, key in variables.items():
        raw = environ.get(variable)
        if raw is not None and raw != "":
            values[key] = raw.split(",") if key in _LISTS else raw
    return values


def _warn_unknown_variables(environ: Mapping[str, str], known: Collection[str]) -> None:
    """A misspelt variable would otherwise be ignored without a word. Its value is never
    shown: it may be a secret."""
    for name in sorted(environ):
        if name.startswith(_VARIABLE_PREFIX) and name not in known:
            log.warning(
                "ignoring environment variable %s: accoil-buffer reads no such variable%s",
                name,
                _did_you_mean(name, known),
            )


def _did_you_mean(name: str, known: Collection[str]) -> str:
    match = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {match[0]}?)" if match else ""


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Turn a value from TOML, the environment or a flag into the type of the key's default.
    An error names the key and the types, never the value, which may be a secret; it is raised
    outside the handler so that the conversion's own error, which quotes the value, is not
    chained to it."""
    try:
        return _convert(key, value, default)
    except (ValueError, OverflowError):  # int("soon"), int(float("inf"))
        problem = (
            "a string that cannot be read as one"
            if isinstance(value, str)
            else f"{_kind(value)} out of range"
        )
    except TypeError:
        problem = _kind(value)
    raise ConfigError(f"{key} must be {_expected(default)}, got {problem}")


def _convert(key: str, value: Any, default: Any) -> Any:
    """``_coerce``'s conversion: TypeError for a value of the wrong type, ValueError for a
    string that does not read as the type."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if not isinstance(value, str):
            raise TypeError
        lowered = value.strip().lower()
        if lowered not in _TRUE | _FALSE:
            raise ValueError
        return lowered in _TRUE
    if isinstance(value, bool):  # True is an int to Python, but not a number to a person
        raise TypeError
    if isinstance(default, int | float):
        if not isinstance(value, int | float | str):
            raise TypeError
        if isinstance(default, int) and isinstance(value, float) and not value.is_integer():
            raise TypeError  # 1.7 for a count: refused, not cut to 1
        number = type(default)(value)
        if not math.isfinite(number):
            raise ValueError
        return number
    if isinstance(default, tuple):
        if not isinstance(value, list | tuple):
            raise TypeError
        return tuple(str(item).strip() for item in value if str(item).strip())
    if not isinstance(value, str):
        raise TypeError
    if key == "sqlite_synchronous":
        return value.upper()
    return value.lower() if key == "durability" else value


def _expected(default: Any) -> str:
    """The type of a key, in words, from its default."""
    if isinstance(default, bool):
        return "a boolean (true/false, yes/no, on/off or 1/0)"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, tuple):
        return "a list of strings"
    return "a string"


def _kind(value: Any) -> str:
    """The type of a value, in words, to name in an error instead of the value."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "a table"
    return f"a {type(value).__name__}"  # a TOML date or time


def _build(values: Mapping[str, Any]) -> Config:
    known = _known_keys()
    unknown = sorted(set(values) - set(known))
    if unknown:
        described = ", ".join(_unknown(key, known) for key in unknown)
        raise ConfigError(f"unknown configuration key(s): {described}")
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


def _unknown(key: str, known: Collection[str]) -> str:
    """An unknown key, with the table it belongs in or the known key it is likely a typo of."""
    if f"server.{key}" in known:
        return f"{key} (it belongs under [server])"
    if key.startswith("server.") and key.removeprefix("server.") in known:
        return f"{key} (it belongs at the top level, before [server])"
    return key + _did_you_mean(key, known)
