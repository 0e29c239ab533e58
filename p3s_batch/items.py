"""Batch items: per-item overrides of an API-format workflow, read from CSV or JSONL.

Each row (CSV) or object (JSONL) is one item. Keys:

- ``id``: the item's name (letters, digits, ``.``, ``_``, ``-``); default ``item-0001`` by row.
- ``<node_id>.<input>``: the value for that node input, e.g. ``3.seed``, ``2.points``, ``6.text``.
  CSV text is converted to the type the workflow has there (int, float, true/false).
- ``@image:<node_id>.<input>``: a local image file (relative to the items file) that is uploaded
  through ``/upload/image``; the input gets the uploaded name (usually a LoadImage ``image``).

An empty cell (or ``null`` in JSONL) keeps the workflow's value.
"""

from __future__ import annotations

import copy
import csv
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ID_KEY = "id"
IMAGE_PREFIX = "@image:"
_KEY = re.compile(r"^(?P<image>@image:)?(?P<node>[^.\s]+)\.(?P<input>[^\s]+)$")
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}
_KINDS = {bool: "true or false", int: "a whole number", float: "a number"}


class BatchInputError(ValueError):
    """The workflow or the items file cannot be used; the message says what to change."""


@dataclass(frozen=True)
class Override:
    node: str
    input: str
    value: Any
    image: bool = False


@dataclass
class BatchItem:
    """One item: its id, the parameters as written in the items file, and the parsed overrides."""

    id: str
    params: dict[str, Any]
    overrides: list[Override] = field(default_factory=list)

    def image_paths(self) -> list[Path]:
        return [Path(o.value) for o in self.overrides if o.image]


def load_workflow(path: Path) -> dict[str, Any]:
    """Read an API-format workflow (``{node_id: {class_type, inputs}}``)."""
    try:
        workflow = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BatchInputError(f"cannot read the workflow {path}: {exc}") from None
    if isinstance(workflow, dict) and "nodes" in workflow and "links" in workflow:
        raise BatchInputError(
            f"{path} is a UI-format workflow; export it in API format (ComfyUI menu: Workflow > Export (API))."
        )
    if (
        not isinstance(workflow, dict)
        or not workflow
        or not all(
            isinstance(node, dict) and "class_type" in node and isinstance(node.get("inputs"), dict)
            for node in workflow.values()
        )
    ):
        raise BatchInputError(f"{path} is not an API-format workflow ({{node_id: {{class_type, inputs}}}}).")
    return workflow


def _rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            return [dict(row) for row in csv.DictReader(handle)]
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BatchInputError(f"{path} line {number}: not valid JSON ({exc.msg}).") from None
            if not isinstance(row, dict):
                raise BatchInputError(f"{path} line {number}: each line must be a JSON object.")
            rows.append(row)
        return rows
    raise BatchInputError(f"{path}: items must be a .csv or .jsonl file.")


def load_items(path: Path, workflow: dict[str, Any]) -> list[BatchItem]:
    """Parse and check every item against ``workflow`` before anything is queued."""
    path = Path(path)
    if not path.is_file():
        raise BatchInputError(f"items file {path} not found.")
    items: list[BatchItem] = []
    seen: set[str] = set()
    for number, row in enumerate(_rows(path), 1):
        where = f"{path.name} item {number}"
        item_id = str(row.get(ID_KEY) or f"item-{number:04d}")
        if not _SAFE_ID.match(item_id):
            raise BatchInputError(f"{where}: id {item_id!r} may hold only letters, digits, '.', '_' and '-'.")
        if item_id in seen:
            raise BatchInputError(f"{where}: id {item_id!r} is used twice; ids must be unique.")
        seen.add(item_id)
        params = {k: v for k, v in row.items() if k != ID_KEY and v not in (None, "")}
        overrides = [_override(where, key, value, workflow, path.parent) for key, value in params.items()]
        item = BatchItem(item_id, params, overrides)
        build_prompt(workflow, item, upload=lambda p: p.name)
        items.append(item)
    if not items:
        raise BatchInputError(f"{path} has no items.")
    return items


def _override(where: str, key: Any, value: Any, workflow: dict[str, Any], base: Path) -> Override:
    match = _KEY.match(str(key)) if key is not None else None
    if not match:
        raise BatchInputError(
            f"{where}: column {key!r} is not 'id', '<node_id>.<input>' or '@image:<node_id>.<input>'."
        )
    node, name, image = match["node"], match["input"], bool(match["image"])
    if node not in workflow:
        raise BatchInputError(f"{where}: {key!r} names node {node!r}; the workflow's nodes are {sorted(workflow)}.")
    if image:
        file = (base / str(value)).resolve()
        if not file.is_file():
            raise BatchInputError(f"{where}: image {value!r} for {key!r} not found (looked at {file}).")
        return Override(node, name, str(file), image=True)
    return Override(node, name, _coerce(where, key, workflow[node]["inputs"].get(name), value))


def _coerce(where: str, key: str, current: Any, value: Any) -> Any:
    """``value`` converted to the type of the workflow's ``current`` value."""
    if isinstance(current, list):
        raise BatchInputError(f"{where}: {key!r} is a link to another node in the workflow; override widget values.")
    if not isinstance(value, str) or current is None or isinstance(current, str):
        return value
    text = value.strip()
    try:
        if isinstance(current, bool):
            if text.lower() not in _TRUE | _FALSE:
                raise ValueError
            return text.lower() in _TRUE
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
    except ValueError:
        raise BatchInputError(
            f"{where}: {key!r} = {value!r} is not {_KINDS[type(current)]} like the workflow's {current!r}."
        ) from None
    return value


def build_prompt(workflow: dict[str, Any], item: BatchItem, upload: Callable[[Path], str]) -> dict[str, Any]:
    """A copy of ``workflow`` with the item's overrides; ``upload(path)`` gives an image's server name."""
    prompt = copy.deepcopy(workflow)
    for override in item.overrides:
        value = upload(Path(override.value)) if override.image else override.value
        prompt[override.node]["inputs"][override.input] = value
    return prompt
