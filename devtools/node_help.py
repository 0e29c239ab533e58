"""The pack's English node texts for the frontend, written from the nodes' own schemas.

``locales/en/nodeDefs.json`` holds, per node id, the ``display_name``, ``description``, each
input's ``name`` and ``tooltip`` and each output's (keyed by its index), in the layout of the
frontend's own ``nodeDefs`` locale files. ComfyUI serves it through ``/i18n``. It is made from
the V3 schemas, so the texts in the code and in the locale file cannot drift apart:
``python -m devtools.node_help`` rewrites it, ``--check`` exits 1 when it is out of date.

The help pages ``web/docs/<node_id>.md`` (what the frontend's node help panel shows) are
written by hand; :func:`node_schemas` lists the nodes they must cover.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCALE_FILE = REPO_ROOT / "locales" / "en" / "nodeDefs.json"
DOCS_DIR = REPO_ROOT / "web" / "docs"


def node_schemas() -> list[Any]:
    """The V3 schemas of every node the pack registers, in registration order."""
    from devtools.pack_modules import import_pack

    pack = import_pack()
    extension = pack.nodes.P3SExtension()  # the entry point's node list, without its start-up side effects
    return [node.GET_SCHEMA() for node in asyncio.run(extension.get_node_list())]


def slot_name(item: Any) -> str:
    """The name the frontend shows for an input or output: its display name, else its id; an output
    declared without an id gets a generated one (``_0_MODEL_``), shown as its type."""
    return item.display_name or (item.io_type if item.id.startswith("_") else item.id)


def _entry(item: Any) -> dict[str, str]:
    entry = {"name": slot_name(item)}
    if item.tooltip:
        entry["tooltip"] = item.tooltip
    return entry


def node_defs_locale(schemas: list[Any]) -> dict[str, Any]:
    """``{node_id: {display_name, description, inputs: {id: {name, tooltip}}, outputs: {"0": ...}}}``."""
    locale: dict[str, Any] = {}
    for schema in schemas:
        locale[schema.node_id] = {
            "display_name": schema.display_name or schema.node_id,
            "description": schema.description or "",
            "inputs": {item.id: _entry(item) for item in schema.inputs},
            "outputs": {str(index): _entry(item) for index, item in enumerate(schema.outputs)},
        }
    return locale


def locale_text(schemas: list[Any]) -> str:
    return json.dumps(node_defs_locale(schemas), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.node_help", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when locales/en/nodeDefs.json is out of date")
    args = parser.parse_args(argv)
    text = locale_text(node_schemas())
    if args.check:
        current = LOCALE_FILE.read_text() if LOCALE_FILE.is_file() else ""
        if current != text:
            print(f"{LOCALE_FILE.relative_to(REPO_ROOT)} is out of date: run python -m devtools.node_help")
            return 1
        return 0
    LOCALE_FILE.parent.mkdir(parents=True, exist_ok=True)
    LOCALE_FILE.write_text(text)
    print(LOCALE_FILE.relative_to(REPO_ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
