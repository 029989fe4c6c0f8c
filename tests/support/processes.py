"""Forking inside a test, for what a child process inherits from its parent; waiting for a
daemon started in a process of its own."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable

import httpx


def fork(child: Callable[[], None]) -> int:
    """Fork; the child runs ``child`` and leaves at once, without pytest's teardown, with exit
    code 0, or 1 if it raised. Returns the child's pid."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            child()
        except BaseException:
            code = 1
        os._exit(code)
    return pid


def wait_listening(daemon: subprocess.Popen[bytes], port: int) -> None:
    """Until ``daemon`` answers on ``port``; fails if it exits first or takes over 30 s."""
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health")
            return
        except httpx.TransportError:
            assert time.monotonic() < deadline
            assert daemon.poll() is None
            time.sleep(0.05)
