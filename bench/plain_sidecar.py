"""`accoil-buffer` with a sidecar that has no console, for bench.sidecar's comparison:

    python -m bench.plain_sidecar serve --port PORT

The console's two touches on ingest go: its paths are not dispatched, and nothing records.
"""

from __future__ import annotations

from starlette.types import ASGIApp

from accoil_buffer.cli import main
from accoil_buffer.console import Console, Ring


def _unmounted(_console: Console, app: ASGIApp) -> ASGIApp:
    return app


def _record_nothing(_ring: Ring, *_args: object) -> None:
    return None


Console.mount = _unmounted  # type: ignore[method-assign,assignment]
Ring.record = _record_nothing  # type: ignore[method-assign,assignment]

if __name__ == "__main__":
    main()
