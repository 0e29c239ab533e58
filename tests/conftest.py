"""Shared test set-up: the repository root on sys.path, so ``p3s_core`` and ``devtools`` import."""

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
