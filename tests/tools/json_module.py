"""Running a benchmark module as a user would (``python -m ...``) and reading its last JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_module_json(*args: str, timeout: int = 300) -> dict:
    """``python -m <args>`` in the repository root; asserts it exits 0 and returns its last stdout line as JSON."""
    done = subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
