"""The real JavaScript Segment libraries against the sidecar: analytics-next bundled into a
page in headless Chromium (Debian's) on another origin, and both analytics-node libraries.

``.ci/run`` installs Chromium and the Node packages (``tests/js``, from its lock file).
"""

from __future__ import annotations

import functools
import http.server
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from accoil_buffer import Buffer
from tests.integration.test_server import Daemon, free_port
from tests.support import tables
from tests.support.node import JS, run_script


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a page whose script is the real analytics-next, bundled by esbuild."""
    folder = tmp_path_factory.mktemp("page")
    subprocess.run(
        [str(JS / "node_modules/.bin/esbuild"), "page.js", "--bundle", "--format=iife",
         f"--outfile={folder / 'bundle.js'}", "--log-level=warning"],
        cwd=JS,
        check=True,
    )  # fmt: skip
    (folder / "index.html").write_text('<!doctype html><script src="bundle.js"></script>')
    return folder


@functools.cache
def _quiet_handler(folder: Path) -> type[http.server.SimpleHTTPRequestHandler]:
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def serve_page(folder: Path) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _quiet_handler(folder))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def page(bundle: Path) -> Iterator[str]:
    yield from serve_page(bundle)


@pytest.fixture
def foreign_page(bundle: Path) -> Iterator[str]:
    yield from serve_page(bundle)


def in_browser(page_url: str, function: str, argument: dict[str, Any]) -> Any:
    outcome = run_script("browser.mjs", f"{page_url}/index.html", function, json.dumps(argument))
    assert outcome["problems"] == []
    return outcome["result"]


def folded(url: str) -> dict[tuple[str, str, str], int]:
    with Buffer(url, start=False) as buf:
        buf.flush()
    return {(user, kind, name): n for (_, user, kind, name), n in tables.counts(url).items()}


@pytest.mark.parametrize("form", ["standard", "batching", "cdn"])
def test_analytics_next_in_a_browser_on_another_origin(
    database_url: str, page: str, form: str
) -> None:
    daemon = Daemon(
        database_url,
        env={
            "ACCOIL_BUFFER_SERVER_CORS_ORIGINS": page,
            "ACCOIL_BUFFER_SERVER_WRITE_KEYS": "wk",
        },
    )
    daemon.wait_ready()
    try:
        result = in_browser(
            page,
            "sendAll",
            {
                "writeKey": "wk",
                "daemon": daemon.url,
                "user": f"web-{form}",
                "batching": form == "batching",
                "cdnForm": form == "cdn",
            },
        )
    finally:
        code, stderr = daemon.stop()
    assert result == "sent"
    assert code == 0, stderr
    user = f"web-{form}"
    assert folded(database_url) == {
        (user, "track", "Viewed Pricing"): 1,  # sent anonymously, then linked by identify
        (user, "track", "Report Created"): 2,
        (user, "page", "Home"): 1,
        (user, "screen", "Dashboard"): 1,
    }
    traits = tables.users(database_url)[user]
    assert traits == {"email": f"{user}@example.test", "createdAt": "2023-11-14T22:13:20.000Z"}
    assert tables.memberships(database_url) == {(f"acc-{user}", user)}


def test_a_foreign_page_stores_nothing(database_url: str, page: str, foreign_page: str) -> None:
    daemon = Daemon(database_url, env={"ACCOIL_BUFFER_SERVER_CORS_ORIGINS": page})
    daemon.wait_ready()
    try:
        results = in_browser(foreign_page, "sneak", {"daemon": daemon.url})
    finally:
        code, stderr = daemon.stop()
    assert code == 0, stderr
    assert results[0] is True  # the beacon was queued by the browser…
    assert folded(database_url) == {}  # …and refused by the daemon, like the fetches


@pytest.mark.parametrize("flavour", ["new", "old"])
def test_analytics_node_through_the_daemon(database_url: str, flavour: str) -> None:
    daemon = Daemon(database_url, env={"ACCOIL_BUFFER_SERVER_WRITE_KEYS": "wk"})
    daemon.wait_ready()
    try:
        done = subprocess.run(
            ["node", "node_client.mjs", flavour, daemon.url, "wk", flavour],
            cwd=JS,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        code, stderr = daemon.stop()
    assert done.returncode == 0, done.stderr
    assert code == 0, stderr
    counts = folded(database_url)
    assert counts == {
        (f"{flavour}-0", "track", "Report Created"): 10,
        (f"{flavour}-1", "track", "Report Created"): 10,
        (f"{flavour}-2", "track", "Report Created"): 10,
        (f"{flavour}-0", "page", "Home"): 1,
        (f"{flavour}-1", "page", "Home"): 1,
        (f"{flavour}-2", "page", "Home"): 1,
    }
    assert tables.memberships(database_url) == {(f"{flavour}-acc", f"{flavour}-0")}


def test_analytics_node_retries_across_a_daemon_restart(database_url: str) -> None:
    env = {"ACCOIL_BUFFER_SERVER_WRITE_KEYS": "wk"}
    first = Daemon(database_url, env=env)
    first.wait_ready()
    client = subprocess.Popen(
        ["node", "node_client.mjs", "steady", first.url, "wk", "steady"],
        cwd=JS,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert client.stdout is not None
    assert client.stdout.readline().strip() == "started"
    time.sleep(0.5)
    code, stderr = first.stop()  # the client goes on calling while nothing listens
    assert code == 0, stderr
    second = Daemon(database_url, env=env, port=first.port)
    second.wait_ready()
    _, errors = client.communicate(timeout=120)
    code, stderr = second.stop()
    assert client.returncode == 0, errors
    assert code == 0, stderr
    assert folded(database_url) == {("steady", "track", "Beat"): 60}  # each once, none lost
