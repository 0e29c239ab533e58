"""The JSONL manifest of earlier p3s-batch versions: one JSON line per finished item, appended.

p3s-batch now keeps its state in the SQLite ledger (p3s_batch/ledger.py), which imports an output
folder's ``manifest.jsonl`` once; this module reads (and can still write) that format.

Each line is written with a single ``write`` on a file opened for appending, then flushed and
synced, so a killed run leaves at most one incomplete last line. Reading skips such a line,
and the next append starts on a fresh line.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

SUCCESS, FAILED = "success", "failed"


class Manifest:
    """``manifest.jsonl`` in a batch's output folder."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def records(self) -> list[dict[str, Any]]:
        """Every complete record, oldest first."""
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # the incomplete last line of a killed run
            if isinstance(record, dict) and "id" in record:
                records.append(record)
        return records

    def latest(self) -> dict[str, dict[str, Any]]:
        """The newest record of each item id."""
        return {record["id"]: record for record in self.records()}

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                if os.fstat(fd).st_size and not self._ends_with_newline():
                    line = "\n" + line
                os.write(fd, line.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"
