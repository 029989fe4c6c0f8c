"""Configuration: file, then environment, then arguments; every key documented."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import re
import tomllib
from dataclasses import fields
from importlib import metadata
from pathlib import Path

import pytest

import accoil_buffer
from accoil_buffer.config import Config, ServerConfig, load_config
from accoil_buffer.errors import ConfigError
from tests.support.paths import ROOT_DIR

EXAMPLE = ROOT_DIR / "config.example.toml"


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
    assert config.database_url == f"sqlite:///{tmp_path / 'file.db'}"  # beside the file
    assert config.anonymous_ttl_days == 7
    assert config.flush_interval_seconds == 20.0
    assert config.server == ServerConfig(port=9001, write_keys=("a", "b"))
    assert config.api_key == "env-key"


def test_defaults_are_a_local_file_and_a_loopback_port() -> None:
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
        ({"ACCOIL_BUFFER_AUTO_MIGRATE": "perhaps"}, "auto_migrate must be a boolean"),
        ({"ACCOIL_BUFFER_FOLD_BATCH_SIZE": "-1"}, "fold_batch_size must not be negative"),
        ({"ACCOIL_BUFFER_SERVER_PORT": "70000"}, "server.port must be between"),
        ({"ACCOIL_BUFFER_SQLITE_SYNCHRONOUS": "sometimes"}, "sqlite_synchronous must be one of"),
        ({"ACCOIL_BUFFER_CONFIG": "/nonexistent.toml"}, "does not exist"),
        (
            {"ACCOIL_BUFFER_REQUEST_TIMEOUT_SECONDS": "30"},
            "claim_lease_seconds must be more than 94: 3 tries of request_timeout_seconds",
        ),
        ({"ACCOIL_BUFFER_CLAIM_LEASE_SECONDS": "34"}, "claim_lease_seconds must be more than 34"),
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
    beside = f"sqlite:///{EXAMPLE.parent / 'accoil_buffer.db'}"
    assert load_config(EXAMPLE, environ={}) == dataclasses.replace(Config(), database_url=beside)


def test_all_is_complete() -> None:
    public = {
        name
        for name, value in vars(accoil_buffer).items()
        if (not name.startswith("_") or name == "__version__") and not inspect.ismodule(value)
    }
    assert set(accoil_buffer.__all__) == public


def test_the_version_is_the_installed_one() -> None:
    assert accoil_buffer.__version__ == metadata.version("accoil-buffer")


def test_the_configuration_page_documents_every_key() -> None:
    page = (EXAMPLE.parent / "docs" / "configuration.md").read_text()
    undocumented = [
        f.name for f in fields(Config) if f.name != "server" and f"| `{f.name}` |" not in page
    ]
    assert undocumented == []


def _messages(exc: BaseException | None) -> str:
    """The text of an error and of every error chained to it, as a traceback would show."""
    text = ""
    while exc is not None:
        text += str(exc) + "\n"
        exc = exc.__cause__ or exc.__context__
    return text


@pytest.mark.parametrize(
    ("content", "environ", "words"),
    [
        ("api_key = 998877665544\n", {}, "api_key must be a string, got an integer"),
        ('api_key = ["sk-998877"]\n', {}, "api_key must be a string, got a list"),
        (
            '[server]\nwrite_keys = "wk-998877"\n',
            {},
            "server.write_keys must be a list of strings, got a string",
        ),
        (
            "",
            {"ACCOIL_BUFFER_FLUSH_INTERVAL_SECONDS": "998877s"},
            "flush_interval_seconds must be a number, got a string that cannot be read as one",
        ),
        (
            "",
            {"ACCOIL_BUFFER_AUTO_MIGRATE": "998877"},
            "auto_migrate must be a boolean (true/false, yes/no, on/off or 1/0), got a string",
        ),
        ("anonymous_ttl_days = -998877\n", {}, "anonymous_ttl_days must be greater than 0"),
        ('durability = "998877"\n', {}, "durability must be one of sync, group"),
        ("[server]\nport = 998877\n", {}, "server.port must be between 1 and 65535"),
    ],
)
def test_an_error_names_the_key_and_type_never_the_value(
    tmp_path: Path, content: str, environ: dict[str, str], words: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=environ)
    assert words in str(caught.value)
    assert "998877" not in _messages(caught.value)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("port = 9000\n", "unknown configuration key(s): port (it belongs under [server])"),
        (
            "[server]\ndatabase_url = 'x'\n",
            "server.database_url (it belongs at the top level, before [server])",
        ),
        ("databse_url = 'x'\n", "databse_url (did you mean database_url?)"),
        ("[server]\nprot = 1\n", "server.prot (did you mean server.port?)"),
        ("server = 1\n", "server must be a table ([server]), got an integer"),
    ],
)
def test_an_unknown_key_says_where_it_belongs(tmp_path: Path, content: str, words: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=re.escape(words)):
        load_config(path, environ={})


def test_a_misspelt_variable_is_named_in_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    environ = {
        "ACCOIL_BUFFER_DATABSE_URL": "sqlite:///secret-998877.db",
        "ACCOIL_BUFFER_API_KEY": "secret-998877",
        "ACCOIL_BUFFER_CONFIG": "",
        "ACCOIL_BUFFER_SERVER_PORT": "9000",
        "ACCOIL_API_KEY": "k",
        "ACCOIL_TEST_POSTGRES_URL": "x",
    }
    with caplog.at_level(logging.WARNING, logger="accoil_buffer.config"):
        config = load_config(environ=environ)
    assert config.database_url == "sqlite:///accoil_buffer.db"
    assert caplog.messages == [
        "ignoring environment variable ACCOIL_BUFFER_API_KEY: accoil-buffer reads no such "
        "variable (did you mean ACCOIL_API_KEY?)",
        "ignoring environment variable ACCOIL_BUFFER_DATABSE_URL: accoil-buffer reads no such "
        "variable (did you mean ACCOIL_BUFFER_DATABASE_URL?)",
    ]


def test_a_relative_sqlite_path_in_a_file_is_beside_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "c.toml").write_text('database_url = "sqlite:///data/cfg.db?timeout=3"\n')
    monkeypatch.chdir(tmp_path)
    config = load_config("etc/c.toml", environ={})
    assert config.database_url == f"sqlite:///{folder / 'data' / 'cfg.db'}?timeout=3"
    from_variable = load_config(
        "etc/c.toml", environ={"ACCOIL_BUFFER_DATABASE_URL": "sqlite:///env.db"}
    )
    assert from_variable.database_url == "sqlite:///env.db"  # relative to the working folder
    for kept in ("sqlite:////abs/cfg.db", "sqlite://", "postgresql://u@h/cfg"):
        (folder / "c.toml").write_text(f'database_url = "{kept}"\n')
        assert load_config(folder / "c.toml", environ={}).database_url == kept
