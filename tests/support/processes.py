"""Forking inside a test, for what a child process inherits from its parent."""

from __future__ import annotations

import os
from collections.abc import Callable


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
