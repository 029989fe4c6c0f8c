"""Configuration: file, then environment, then arguments; every key documented."""

from __future__ import annotations

import inspect
import re
import tomllib
from dataclasses import fields
from importlib import metadata
from pathlib import Path

import pytest

import accoil_buffer
from accoil_buffer.config import Config, ServerConfig, load_config
from accoil_buffer.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"


def test_file_then_environment_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        'database_url = "sqlite:///file.db"\nflush_interval_seconds = 5\n'
        'anonymous_ttl_days = 7\n[server]\nport = 9000\nwrite_keys = ["a", "b"]\n'
    )
    environ = {
        "ACCOIL_BUFFER_CONFIG": str(path),
        "ACCOIL_BUFFER_FLUSH_INTERVAL_SECONDS": "10",
        "ACCOIL_BUFFER_SERVER_PORT": "9001",
        "ACCOIL_API_KEY": "env-key",
    }
    config = load_config(environ=environ, overrides={"flush_interval_seconds": 20, "api_key": None})
    assert config.database_url == "sqlite:///file.db"
    assert config.anonymous_ttl_days == 7
    assert config.flush_interval_seconds == 20.0
    assert config.server == ServerConfig(port=9001, write_keys=("a", "b"))
    assert config.api_key == "env-key"


def test_defaults_match_the_spec() -> None:
    config = load_config(environ={})
    assert config.database_url == "sqlite:///accoil_buffer.db"
    assert (config.auto_migrate, config.flush_interval_seconds) == (True, 60.0)
    assert (config.server.host, config.server.port, config.server.write_keys) == (
        "127.0.0.1",
        8740,
        (),
    )


@pytest.mark.parametrize(
    ("environ", "words"),
    [
        ({"ACCOIL_BUFFER_AUTO_MIGRATE": "perhaps"}, "auto_migrate has an invalid value"),
        ({"ACCOIL_BUFFER_FOLD_BATCH_SIZE": "-1"}, "fold_batch_size must not be negative"),
        ({"ACCOIL_BUFFER_SERVER_PORT": "70000"}, "server.port must be between"),
        ({"ACCOIL_BUFFER_SQLITE_SYNCHRONOUS": "sometimes"}, "sqlite_synchronous must be one of"),
        ({"ACCOIL_BUFFER_CONFIG": "/nonexistent.toml"}, "does not exist"),
    ],
)
def test_bad_values_name_the_key(environ: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(words)):
        load_config(environ=environ)


def test_the_api_key_and_write_keys_never_show_in_repr() -> None:
    config = Config(api_key="secret-key", server=ServerConfig(write_keys=("wk-secret",)))
    assert "secret" not in repr(config)


def test_the_example_file_documents_every_key_and_loads() -> None:
    document = tomllib.loads(EXAMPLE.read_text())
    top = {f.name for f in fields(Config)} - {"server"}
    assert set(document) - {"server"} == top
    assert set(document["server"]) == {f.name for f in fields(ServerConfig)}
    assert load_config(EXAMPLE, environ={}) == Config()


def test_all_is_complete() -> None:
    public = {
        name
        for name, value in vars(accoil_buffer).items()
        if (not name.startswith("_") or name == "__version__") and not inspect.ismodule(value)
    }
    assert set(accoil_buffer.__all__) == public


def test_the_version_is_the_installed_one() -> None:
    assert accoil_buffer.__version__ == metadata.version("accoil-buffer")


def test_the_readme_documents_every_key() -> None:
    readme = (EXAMPLE.parent / "README.md").read_text()
    undocumented = [
        f.name for f in fields(Config) if f.name != "server" and f"| `{f.name}` |" not in readme
    ]
    assert undocumented == []
