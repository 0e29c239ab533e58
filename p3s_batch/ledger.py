"""The batch ledger: ``OUT/ledger.sqlite`` (standard library sqlite3), the resume state of a batch.

Tables: ``items`` (one row per item id: its parameters, status ``pending|running|success|failed``,
the prompt id and server of its current dispatch, its outputs, its error), ``attempts`` (one row
per finished attempt, never rewritten: what ran where and how it ended), ``servers`` (each
ComfyUI server a run used: url, host, process id) and ``runs``. Only the driver writes; each
change is one transaction (WAL, synchronous=FULL), so a killed driver leaves the ledger as of its
last finished item.

One driver at a time: :class:`Ledger` holds an exclusive lock on ``OUT/ledger.lock`` while it is
open (released by the system when the process dies); a second driver is refused with who holds
it. Today's ``manifest.jsonl`` of an output folder is imported once when the ledger is created.

``python -m p3s_batch.ledger OUT [--json]`` prints where a batch stands.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sqlite3
import sys
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from p3s_batch.manifest import Manifest

LEDGER_NAME = "ledger.sqlite"
LOCK_NAME = "ledger.lock"
MANIFEST_NAME = "manifest.jsonl"
PENDING, RUNNING, SUCCESS, FAILED = "pending", "running", "success", "failed"
SERVER_LOST = "server_lost"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY, params TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    server TEXT, prompt_id TEXT, outputs TEXT NOT NULL DEFAULT '[]', error TEXT, seconds REAL,
    updated_at TEXT NOT NULL, finished_at TEXT);
CREATE TABLE IF NOT EXISTS attempts (
    n INTEGER PRIMARY KEY AUTOINCREMENT, item_id TEXT NOT NULL, params TEXT NOT NULL, server TEXT,
    prompt_id TEXT, outcome TEXT NOT NULL, error TEXT, seconds REAL, at TEXT NOT NULL, run_id INTEGER);
CREATE INDEX IF NOT EXISTS attempts_item ON attempts (item_id);
CREATE TABLE IF NOT EXISTS servers (
    n INTEGER PRIMARY KEY AUTOINCREMENT, run_id INTEGER, name TEXT NOT NULL, url TEXT NOT NULL, host TEXT,
    pid INTEGER, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, pid INTEGER, host TEXT, engine TEXT, started_at TEXT NOT NULL,
    ended_at TEXT, summary TEXT);
"""


class LedgerBusy(RuntimeError):
    """Another driver holds the output folder."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def params_key(params: dict[str, Any]) -> str:
    """The canonical text of an item's parameters: equal parameters, equal text."""
    return json.dumps(params, sort_keys=True, ensure_ascii=False)


@dataclass
class ItemState:
    """An item's row."""

    id: str
    params: dict[str, Any]
    status: str
    attempts: int
    server: str | None
    prompt_id: str | None
    outputs: list[str]
    error: str | None
    seconds: float | None


class _FolderLock:
    """An exclusive, non-blocking lock on a file (fcntl; msvcrt on Windows), released at process death."""

    def __init__(self, path: Path):
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            self._lock()
        except OSError:
            holder = os.pread(self._fd, 4096, 0).decode(errors="replace").strip() or "another process"
            os.close(self._fd)
            raise LedgerBusy(
                f"{path.parent} is in use by another p3s-batch run ({holder}); wait for it to end, "
                "or give this run another -o folder."
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"pid {os.getpid()} on {socket.gethostname()} since {now()}".encode(), 0)

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # Windows
            import msvcrt

            msvcrt.locking(self._fd, msvcrt.LK_NBLCK, 1)
        else:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release(self) -> None:
        if self._fd >= 0:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = -1


class Ledger:
    """``OUT/ledger.sqlite``; opened by one driver at a time (``lock=False``: read-only look)."""

    def __init__(self, out_dir: Path, lock: bool = True):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / LEDGER_NAME
        self._lock = None
        if lock:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._lock = _FolderLock(self.out_dir / LOCK_NAME)
        elif not self.path.is_file():
            raise FileNotFoundError(f"no batch ledger in {self.out_dir} ({LEDGER_NAME} not found)")
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.db.row_factory = sqlite3.Row
            if lock:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=FULL")
                self.db.executescript(SCHEMA)
                self._import_manifest_once()
            elif not self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'runs'").fetchone():
                raise FileNotFoundError(f"the batch ledger in {self.out_dir} is being created")
        except BaseException:
            self.close()
            raise
        self.run_id: int | None = None

    def close(self) -> None:
        if getattr(self, "db", None) is not None:
            self.db.close()
            self.db = None
        if self._lock:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _tx(self):
        return _Transaction(self.db)

    # -- meta ---------------------------------------------------------------------------------

    def meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row["value"] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def client_key(self) -> str:
        """A random key of this output folder, kept: the websocket client ids of its runs, so that a
        restarted driver receives the messages of prompts the killed one had queued."""
        key = self.meta("client_key")
        if key is None:
            key = uuid.uuid4().hex[:12]
            self.set_meta("client_key", key)
        return key

    # -- runs and servers ---------------------------------------------------------------------

    def start_run(self, engine: str) -> int:
        with self._tx() as db:
            cursor = db.execute(
                "INSERT INTO runs (pid, host, engine, started_at) VALUES (?, ?, ?, ?)",
                (os.getpid(), socket.gethostname(), engine, now()),
            )
        self.run_id = cursor.lastrowid
        return self.run_id

    def end_run(self, summary: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET ended_at = ?, summary = ? WHERE id = ?", (now(), json.dumps(summary), self.run_id)
            )

    def record_server(self, name: str, url: str, host: str | None, pid: int | None) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO servers (run_id, name, url, host, pid, at) VALUES (?, ?, ?, ?, ?, ?)",
                (self.run_id, name, url, host, pid, now()),
            )

    def servers(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM servers ORDER BY n")]

    # -- items --------------------------------------------------------------------------------

    def item(self, item_id: str) -> ItemState | None:
        row = self.db.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
        return _state(row) if row else None

    def items(self) -> dict[str, ItemState]:
        return {row["id"]: _state(row) for row in self.db.execute("SELECT * FROM items ORDER BY id")}

    def is_done(self, item_id: str, params: dict[str, Any]) -> bool:
        """True when the item succeeded before with these parameters."""
        row = self.db.execute("SELECT status, params FROM items WHERE id = ?", (item_id,)).fetchone()
        return bool(row) and row["status"] == SUCCESS and row["params"] == params_key(params)

    def mark_running(self, item_id: str, params: dict[str, Any], server: str, prompt_id: str) -> None:
        """The item was handed to ``server`` under ``prompt_id`` (kept for a restarted driver to adopt)."""
        key = params_key(params)
        with self._tx() as db:
            updated = db.execute(
                "UPDATE items SET status = ?, server = ?, prompt_id = ?, updated_at = ?,"
                " attempts = CASE WHEN params = ? THEN attempts ELSE 0 END, params = ?"
                " WHERE id = ? AND NOT (status = ? AND params = ?)",
                (RUNNING, server, prompt_id, now(), key, key, item_id, SUCCESS, key),
            ).rowcount
            if not updated and not db.execute("SELECT 1 FROM items WHERE id = ?", (item_id,)).fetchone():
                db.execute(
                    "INSERT INTO items (id, params, status, server, prompt_id, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (item_id, key, RUNNING, server, prompt_id, now()),
                )

    def finish(
        self,
        item_id: str,
        params: dict[str, Any],
        status: str,
        attempts: Iterable[dict[str, Any]],
        outputs: list[str] | None = None,
        error: str | None = None,
        seconds: float | None = None,
    ) -> None:
        """Record an item's attempts and its end (``success``, ``failed``, or ``pending`` again when
        its server was lost), in one transaction. An item already succeeded with the same parameters
        keeps its row; the attempts are logged all the same (that is what :meth:`duplicates` counts)."""
        key, at = params_key(params), now()
        attempts = list(attempts)
        with self._tx() as db:
            for attempt in attempts:
                db.execute(
                    "INSERT INTO attempts (item_id, params, server, prompt_id, outcome, error, seconds, at, run_id)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        item_id,
                        key,
                        attempt.get("server"),
                        attempt.get("prompt_id"),
                        attempt["outcome"],
                        attempt.get("error"),
                        attempt.get("seconds"),
                        attempt.get("at", at),
                        self.run_id,
                    ),
                )
            db.execute(
                "UPDATE items SET status = ?, attempts = attempts + ?, outputs = ?, error = ?, seconds = ?,"
                " updated_at = ?, finished_at = ?, prompt_id = CASE WHEN ? = 'pending' THEN NULL ELSE prompt_id END"
                " WHERE id = ? AND params = ? AND status != 'success'",
                (
                    status,
                    len(attempts),
                    json.dumps(outputs or []),
                    error,
                    seconds,
                    at,
                    at if status in (SUCCESS, FAILED) else None,
                    status,
                    item_id,
                    key,
                ),
            )

    # -- accounting ---------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        rows = self.db.execute("SELECT status, COUNT(*) AS n FROM items GROUP BY status")
        counts = dict.fromkeys((PENDING, RUNNING, SUCCESS, FAILED), 0)
        counts.update({row["status"]: row["n"] for row in rows})
        return counts

    def duplicates(self) -> dict[str, int]:
        """Items that succeeded more than once with the same parameters: ``{id: successes}``."""
        rows = self.db.execute(
            "SELECT item_id, COUNT(*) AS n FROM attempts WHERE outcome = 'success'"
            " GROUP BY item_id, params HAVING COUNT(*) > 1"
        )
        return {row["item_id"]: row["n"] for row in rows}

    def attempts(self, item_id: str | None = None) -> list[dict[str, Any]]:
        if item_id is None:
            return [dict(r) for r in self.db.execute("SELECT * FROM attempts ORDER BY n")]
        return [dict(r) for r in self.db.execute("SELECT * FROM attempts WHERE item_id = ? ORDER BY n", (item_id,))]

    # -- the JSONL manifest of earlier versions -----------------------------------------------

    def _import_manifest_once(self) -> None:
        manifest = self.out_dir / MANIFEST_NAME
        if self.meta("manifest_imported") is not None or not manifest.is_file():
            return
        count = self.import_manifest(manifest)
        self.set_meta("manifest_imported", json.dumps({"file": str(manifest), "records": count, "at": now()}))

    def import_manifest(self, path: Path) -> int:
        """Import a ``manifest.jsonl``: each record as an attempt, the newest of each id as its row
        (an id already in the ledger keeps its row). Returns the number of records."""
        records = Manifest(path).records()
        with self._tx() as db:
            for record in records:
                db.execute(
                    "INSERT INTO attempts (item_id, params, server, prompt_id, outcome, error, seconds, at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record["id"],
                        params_key(record.get("params", {})),
                        record.get("server"),
                        record.get("prompt_id"),
                        record.get("status", FAILED),
                        record.get("error"),
                        record.get("seconds"),
                        record.get("finished_at") or now(),
                    ),
                )
            for item_id, record in Manifest(path).latest().items():
                db.execute(
                    "INSERT OR IGNORE INTO items (id, params, status, attempts, server, prompt_id, outputs, error,"
                    " seconds, updated_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        item_id,
                        params_key(record.get("params", {})),
                        SUCCESS if record.get("status") == SUCCESS else FAILED,
                        record.get("attempts", 1),
                        record.get("server"),
                        record.get("prompt_id"),
                        json.dumps(record.get("outputs", [])),
                        record.get("error"),
                        record.get("seconds"),
                        now(),
                        record.get("finished_at"),
                    ),
                )
        return len(records)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on an exception)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind, *exc) -> None:
        self.db.execute("ROLLBACK" if kind else "COMMIT")


def _state(row: sqlite3.Row) -> ItemState:
    return ItemState(
        id=row["id"],
        params=json.loads(row["params"]),
        status=row["status"],
        attempts=row["attempts"],
        server=row["server"],
        prompt_id=row["prompt_id"],
        outputs=json.loads(row["outputs"]),
        error=row["error"],
        seconds=row["seconds"],
    )


def status_report(out_dir: Path) -> dict[str, Any]:
    """Counts, duplicates and the failed items' errors of a batch (read-only; works during a run)."""
    ledger = Ledger(out_dir, lock=False)
    try:
        items = ledger.items()
        return {
            "items": len(items),
            **ledger.counts(),
            "duplicates": len(ledger.duplicates()),
            "attempts": len(ledger.attempts()),
            "failures": {i.id: i.error for i in items.values() if i.status == FAILED},
        }
    finally:
        ledger.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m p3s_batch.ledger", description="Where a batch stands.")
    parser.add_argument("out", type=Path, help="the batch's output folder (holds ledger.sqlite)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        report = status_report(args.out)
    except FileNotFoundError as exc:
        print(f"p3s-batch: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"{report['items']} item(s): {report['success']} succeeded, {report['failed']} failed, "
            f"{report['running']} running, {report['pending']} pending; {report['attempts']} attempt(s), "
            f"{report['duplicates']} duplicate(s)"
        )
        for item_id, error in report["failures"].items():
            print(f"  {item_id}: {error}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
