"""The repository's root: where subprocesses run and where the examples and README are."""

from __future__ import annotations

from pathlib import Path

ROOT_DIR = Path(__file__).resolve().parents[2]
