"""p3s-batch: queue an API-format workflow once per item of a CSV/JSONL file on ComfyUI servers.

Items override node inputs (see p3s_batch/items.py for the syntax), are spread over the
given servers (one worker per ``--server``), retried on failure with exponential backoff, and
their output files are downloaded to ``OUT/<item id>/``. ``OUT/manifest.jsonl`` records each
finished item (id, parameters, status, output files, error, attempts); rerunning the same
command skips the items that already succeeded with the same parameters.

Standard library only (the HTTP client is p3s_batch.api_client).
"""

from __future__ import annotations

import argparse
import hashlib
import queue
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from p3s_batch.api_client import ComfyAPIError, ComfyClient, PromptResult
from p3s_batch.items import BatchInputError, BatchItem, build_prompt, load_items, load_workflow
from p3s_batch.manifest import FAILED, SUCCESS, Manifest

DEFAULT_SERVER = "http://127.0.0.1:8188"
MANIFEST_NAME = "manifest.jsonl"


class ItemFailed(RuntimeError):
    """The server ran the prompt and reported an error."""


@dataclass
class BatchOptions:
    servers: list[str] = field(default_factory=lambda: [DEFAULT_SERVER])
    retries: int = 2
    backoff: float = 2.0
    timeout: float = 600.0
    limit: int | None = None


@dataclass
class BatchSummary:
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    retries: int = 0
    interrupted: bool = False


def pending_items(items: list[BatchItem], manifest: Manifest) -> tuple[list[BatchItem], int]:
    """The items still to run and how many are done (succeeded before with the same parameters)."""
    latest = manifest.latest()
    todo = [
        item
        for item in items
        if not (latest.get(item.id, {}).get("status") == SUCCESS and latest[item.id].get("params") == item.params)
    ]
    return todo, len(items) - len(todo)


def _error_text(result: PromptResult) -> str:
    error = result.error
    if not error:
        return f"prompt ended with status {result.history.get('status', {}).get('status_str')!r}"
    return f"{error.get('node_type')} (node {error.get('node_id')}): {error.get('exception_message', '').strip()}"


def _node_errors_text(node_errors: dict[str, Any]) -> str:
    return "; ".join(
        f"node {node_id} ({entry.get('class_type')}): {error.get('message')} {error.get('details', '')}".strip()
        for node_id, entry in node_errors.items()
        for error in entry.get("errors", [])
    )


class _Runner:
    def __init__(self, workflow: dict[str, Any], out_dir: Path, options: BatchOptions, log: Callable[[str], None]):
        self.workflow, self.out_dir, self.options, self._log = workflow, out_dir, options, log
        self.manifest = Manifest(out_dir / MANIFEST_NAME)
        self.summary = BatchSummary()
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._uploaded: dict[tuple[str, str], str] = {}
        self._done = 0
        self._total = 0

    def log(self, message: str) -> None:
        with self._lock:
            self._log(message)

    def upload(self, client: ComfyClient, path: Path) -> str:
        """Upload once per server, under a content-hashed name so different files never collide."""
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        key = (client.url, digest)
        if key not in self._uploaded:
            self._uploaded[key] = client.upload_image(path, name=f"p3s_batch_{digest}_{path.name}")
        return self._uploaded[key]

    def run(self, todo: list[BatchItem]) -> None:
        self._total = len(todo)
        work: queue.Queue[BatchItem] = queue.Queue()
        for item in todo:
            work.put(item)
        workers = [
            threading.Thread(target=self._worker, args=(ComfyClient(url), work), daemon=True)
            for url in self.options.servers
        ]
        for worker in workers:
            worker.start()
        try:
            for worker in workers:
                while worker.is_alive():
                    worker.join(0.2)
        except KeyboardInterrupt:
            self.stop.set()
            self.summary.interrupted = True

    def _worker(self, client: ComfyClient, work: queue.Queue[BatchItem]) -> None:
        while not self.stop.is_set():
            try:
                item = work.get_nowait()
            except queue.Empty:
                return
            self._run_item(client, item)

    def _run_item(self, client: ComfyClient, item: BatchItem) -> None:
        attempts = self.options.retries + 1
        started = time.monotonic()
        record: dict[str, Any] = {"id": item.id, "params": item.params, "server": client.url, "outputs": []}
        for attempt in range(1, attempts + 1):
            prompt_id = None
            try:
                prompt = build_prompt(self.workflow, item, upload=lambda path: self.upload(client, path))
                try:
                    answer = client.submit(prompt)
                except ComfyAPIError as refused:  # no output node valid: the prompt is refused as a whole
                    errors = refused.body.get("node_errors") if isinstance(refused.body, dict) else None
                    if not errors:
                        raise
                    raise ItemFailed(f"invalid inputs, not run: {_node_errors_text(errors)}") from None
                prompt_id = answer["prompt_id"]
                if answer.get("node_errors"):
                    client.cancel(prompt_id)
                    raise ItemFailed(f"invalid inputs, not run: {_node_errors_text(answer['node_errors'])}")
                try:
                    result = client.wait(prompt_id, timeout=self.options.timeout)
                except TimeoutError:
                    client.cancel(prompt_id)
                    raise
                if not result.succeeded:
                    raise ItemFailed(_error_text(result))
                record.update(status=SUCCESS, error=None, outputs=self._download(client, result, item.id))
            except (ComfyAPIError, ItemFailed, OSError, TimeoutError, ValueError) as exc:
                record.update(status=FAILED, error=str(exc), outputs=[])
                if attempt < attempts and not self.stop.is_set():
                    delay = self.options.backoff * 2 ** (attempt - 1)
                    with self._lock:
                        self.summary.retries += 1
                    self.log(f"  {item.id}: attempt {attempt}/{attempts} failed: {exc}; retrying in {delay:g} s")
                    self.stop.wait(delay)
                    continue
            record.update(
                attempts=attempt,
                prompt_id=prompt_id,
                seconds=round(time.monotonic() - started, 2),
                finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            )
            break
        self.manifest.append(record)
        with self._lock:
            self._done += 1
            ok = record["status"] == SUCCESS
            if ok:
                self.summary.succeeded += 1
            else:
                self.summary.failed += 1
            done, total = self._done, self._total
        width = len(str(total))
        if ok:
            detail = f"ok in {record['seconds']:.1f} s on {client.url}, {len(record['outputs'])} file(s)"
        else:
            detail = f"FAILED after {record['attempts']} attempt(s): {record['error']}"
        self.log(f"[{done:>{width}}/{total}] {item.id} {detail}")

    def _download(self, client: ComfyClient, result: PromptResult, item_id: str) -> list[str]:
        """Fetch every output file into ``OUT/<item id>/`` (replaced whole, via a staging folder)."""
        staging = self.out_dir / f".partial-{item_id}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        names = []
        for node_id, record in result.output_files():
            name = f"{node_id}_{Path(record['filename']).name}"
            (staging / name).write_bytes(client.view(record))
            names.append(name)
        final = self.out_dir / item_id
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        return [f"{item_id}/{name}" for name in names]


def run_batch(
    workflow: dict[str, Any],
    items: list[BatchItem],
    out_dir: Path,
    options: BatchOptions | None = None,
    log: Callable[[str], None] = print,
) -> BatchSummary:
    """Run the items not yet done; append each finished one to ``out_dir/manifest.jsonl``."""
    options = options or BatchOptions()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runner = _Runner(workflow, out_dir, options, log)
    todo, done = pending_items(items, runner.manifest)
    runner.summary.skipped = done
    if options.limit is not None:
        todo = todo[: options.limit]
    log(
        f"batch: {len(items)} item(s), {done} done before, {len(todo)} to run on "
        f"{len(options.servers)} server(s); manifest {runner.manifest.path}"
    )
    runner.run(todo)
    summary = runner.summary
    log(
        f"batch: {summary.succeeded} ok, {summary.failed} failed, {summary.skipped} skipped (done before), "
        f"{summary.retries} retr{'y' if summary.retries == 1 else 'ies'}"
        + ("; interrupted: rerun the same command to resume" if summary.interrupted else "")
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="p3s-batch", description=__doc__.split("\n\n")[0])
    parser.add_argument("workflow", type=Path, help="API-format workflow JSON (Workflow > Export (API))")
    parser.add_argument("items", type=Path, help="CSV or JSONL: 'id', '<node>.<input>', '@image:<node>.<input>'")
    parser.add_argument("-o", "--out", type=Path, required=True, help="output folder (holds manifest.jsonl)")
    parser.add_argument(
        "--server", action="append", dest="servers", help=f"ComfyUI URL, repeatable (default {DEFAULT_SERVER})"
    )
    parser.add_argument("--retries", type=int, default=2, help="retries per failed item (default 2)")
    parser.add_argument("--backoff", type=float, default=2.0, help="seconds before the first retry, doubling")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for one prompt")
    parser.add_argument("--limit", type=int, help="run at most this many pending items, then stop")
    args = parser.parse_args(argv)
    if args.retries < 0 or args.backoff < 0 or args.timeout <= 0 or (args.limit is not None and args.limit < 0):
        parser.error("--retries, --backoff and --limit must be >= 0 and --timeout > 0")
    try:
        workflow = load_workflow(args.workflow)
        items = load_items(args.items, workflow)
    except BatchInputError as exc:
        print(f"p3s-batch: {exc}", file=sys.stderr)
        return 2
    options = BatchOptions(
        servers=[url.rstrip("/") for url in args.servers or [DEFAULT_SERVER]],
        retries=args.retries,
        backoff=args.backoff,
        timeout=args.timeout,
        limit=args.limit,
    )
    summary = run_batch(workflow, items, args.out, options, log=lambda line: print(line, flush=True))
    if summary.interrupted:
        return 130
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
