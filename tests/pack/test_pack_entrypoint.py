"""The pack loads as ComfyUI loads it, and registers this branch's nodes."""

import asyncio
import re
from pathlib import Path

import pytest

from devtools.pack_modules import REPO_ROOT, import_pack, import_pack_module, pack_core


def _missing_node_modules() -> list[str]:
    source = (REPO_ROOT / "nodes" / "__init__.py").read_text()
    names = re.findall(r"^from \.(\w+) import", source, flags=re.MULTILINE)
    return [name for name in names if not (Path(REPO_ROOT, "nodes", f"{name}.py")).is_file()]


def test_single_module_import_uses_the_pack_copy_of_p3s_core():
    module = import_pack_module("nodes.schedule_node")
    assert module.__name__ == "p3s_pack_parts.nodes.schedule_node"
    assert pack_core(module).__name__ == "p3s_pack_parts.p3s_core"
    assert module.WeightSchedule is pack_core(module).sampling.schedule.WeightSchedule


@pytest.mark.skipif(
    bool(_missing_node_modules()),
    reason=f"nodes/__init__.py imports modules not on this branch: {_missing_node_modules()}",
)
def test_entrypoint_lists_schedule_and_loader_nodes():
    pack = import_pack()
    extension = asyncio.run(pack.comfy_entrypoint())
    # GET_SCHEMA validates each schema (e.g. input and output ids must differ) as ComfyUI does.
    node_ids = {node.GET_SCHEMA().node_id for node in asyncio.run(extension.get_node_list())}
    assert {"P3SPoints", "P3SSchedule", "P3SLoader"} <= node_ids
