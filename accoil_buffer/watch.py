"""``accoil-buffer status --watch``: the delivery state and what waits, live in a terminal,
worded as the console words them."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from accoil_buffer.buffer import Buffer
from accoil_buffer.console.overview import overview
from accoil_buffer.errors import StorageError

REFRESH_SECONDS = 1.0
_STYLES = {"delivering": "bold green", "offline": "bold yellow", "off": "bold"}


def render(view: dict[str, Any], moment: datetime) -> RenderableType:
    """The overview as a panel of facts and a table of what waits."""
    state = Text(view["state"].upper(), style=_STYLES.get(view["state"], "bold red"))
    if not view["storing"]:
        state.append(", NOT STORING", style="bold red")
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="dim")
    facts.add_column()
    for label, value in view["facts"]:
        facts.add_row(label, f"{value:,}" if isinstance(value, int) else str(value))
    waiting = Table(title="Waiting", title_justify="left", show_header=False)
    waiting.add_column(style="dim")
    waiting.add_column(justify="right")
    for label, n in view["pending"]:
        waiting.add_row(label, f"{n:,}")
    footer = Text(f"updated {moment:%H:%M:%S} UTC; Ctrl-C to stop", style="dim")
    headline = Group(Text.assemble(state, "  ", view["headline"]), "", facts)
    return Group(Panel(headline, title="accoil-buffer delivery"), waiting, footer)


def snapshot(buffer: Buffer) -> RenderableType:
    now = datetime.now(UTC)
    try:
        return render(overview(buffer.health(), buffer.status_report(), now), now)
    except StorageError as exc:
        return Panel(Text(f"cannot read the database: {exc}", style="bold red"))


def watch(buffer: Buffer, console: Console | None = None) -> None:
    """Redraw every REFRESH_SECONDS until Ctrl-C."""
    with Live(snapshot(buffer), console=console, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(REFRESH_SECONDS)
                live.update(snapshot(buffer), refresh=True)
        except KeyboardInterrupt:
            pass
