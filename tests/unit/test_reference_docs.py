"""The documentation stays complete and true: generated references are current, every page
is in the site's navigation, relative links resolve, and what the docs name exists."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from accoil_buffer.metrics import Metrics
from accoil_buffer.status import (
    AnonymousStatus,
    DeliveryStatus,
    OutboxStatus,
    Pending,
    Status,
)
from accoil_buffer.store import schema

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
GENERATED = [DOCS / "configuration.md", DOCS / "cli.md"]
# [text](target): a target with no scheme, not an anchor within the page.
_LINK = re.compile(r"\]\((?![a-z]+:|#)([^)\s]+)\)")


def test_generated_references_are_current() -> None:
    checked = subprocess.run(
        [sys.executable, "-m", "cogapp", "--check", *map(str, GENERATED)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, (
        f"the generated references are stale: run `cog -r docs/*.md`\n{checked.stdout}"
        f"{checked.stderr}"
    )


def test_every_page_is_in_the_navigation() -> None:
    nav = set(re.findall(r"^\s*-\s.*?:\s*(\S+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M))
    pages = {str(page.relative_to(DOCS)) for page in DOCS.rglob("*.md")}
    assert pages - nav == set(), "pages missing from mkdocs.yml's nav"
    assert nav - pages == set(), "nav entries with no page"


@pytest.mark.parametrize(
    "page",
    [*sorted(DOCS.rglob("*.md")), ROOT / "README.md", ROOT / "CONTRIBUTING.md"],
    ids=lambda page: str(page.relative_to(ROOT)),
)
def test_relative_links_resolve(page: Path) -> None:
    broken = [
        target
        for target in _LINK.findall(page.read_text())
        if not (page.parent / target.partition("#")[0]).exists()
    ]
    assert broken == []


def test_the_tables_page_names_every_table_and_column() -> None:
    text = (DOCS / "tables.md").read_text()
    missing = [
        f"{table.name}.{column.name}"
        for table in schema.metadata.sorted_tables
        for column in table.columns
        if f"| `{table.name}` |" not in text or f"`{column.name}`" not in text
    ]
    assert missing == []


def _exposed_metric_names() -> set[str]:
    """Every sample name /metrics can show, from the metric families it declares."""
    status = Status(
        outbox=OutboxStatus(0, None, 0),
        pending=Pending(0, 0, 0, 0, 0, 0),
        anonymous=AnonymousStatus(0, 0),
        oldest_undelivered_at=None,
        oldest_undelivered_age_seconds=None,
        drops={"buffer_full": 1},
        delivery=DeliveryStatus(None, None, None, None, None, None, None, None, 0, 0, 0),
    )
    names: set[str] = set()
    for line in Metrics(lambda: status).render().decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            if kind == "counter":  # declared with or without _total, by library version
                name = name.removesuffix("_total")
                names |= {f"{name}_total", f"{name}_created"}
            else:
                names.add(name)
    return names


def test_the_grafana_dashboard_queries_metrics_the_daemon_exposes() -> None:
    dashboard = json.loads((ROOT / "examples" / "grafana-dashboard.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"accoil_buffer_\w+", target["expr"])
    }
    assert queried, "the dashboard queries nothing"
    assert queried - _exposed_metric_names() == set()
