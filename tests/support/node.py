"""Running the Node scripts of tests/js (the Segment libraries, playwright-core)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from tests.support.paths import ROOT_DIR

JS = ROOT_DIR / "tests" / "js"


def run_script(script: str, *arguments: str) -> Any:
    """Run ``node script arguments…`` in tests/js; the last line it prints is its JSON result."""
    done = subprocess.run(
        ["node", script, *arguments],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])
