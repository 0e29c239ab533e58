"""The graph of an API-format prompt (``{node id: {"class_type", "inputs"}}``)."""

from __future__ import annotations

from typing import Any


def needed_nodes(prompt: dict[str, Any], outputs: list[str]) -> dict[str, Any]:
    """The nodes of ``prompt`` that ``outputs`` (node ids) need, the links followed back; ComfyUI
    runs such a part alone."""
    keep: set[str] = set()
    todo = list(outputs)
    while todo:
        node_id = todo.pop()
        if node_id in keep:
            continue
        keep.add(node_id)
        todo += [v[0] for v in prompt[node_id]["inputs"].values() if is_link(v)]
    return {i: node for i, node in prompt.items() if i in keep}


def is_link(value: Any) -> bool:
    """Whether an input value is a link ``[node id, output index]``, as ComfyUI's executor reads one
    (a list widget value such as ``[3, 4]`` is not)."""
    return (
        isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], (int, float))
    )
