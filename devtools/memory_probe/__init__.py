"""A test-only ComfyUI node that reports the bytes of every tensor alive in the server process.

Linked into the test server's ``custom_nodes`` by :func:`devtools.model_files.link_memory_probe`
(never shipped: ``devtools/`` is outside the node archive). ``Tensor Bytes (devtools)`` collects
garbage, then sums the storage bytes of every distinct tensor storage the garbage collector can
reach, and shows the total in its ``ui`` output (``/history``): an exact count, free of the
allocator's noise that RSS carries. Its optional ``after`` image input makes it run at the end of
a prompt, while that prompt's models are still held.
"""

from __future__ import annotations

import gc

import torch


def live_tensor_bytes() -> int:
    """Bytes of the distinct storages of every tensor the garbage collector tracks (CPU and devices)."""
    gc.collect()
    seen: dict[tuple[str, int], int] = {}
    for obj in gc.get_objects():
        try:
            if not isinstance(obj, torch.Tensor) or obj.is_meta:
                continue
            storage = obj.untyped_storage()
            seen[(str(obj.device), storage.data_ptr())] = storage.nbytes()
        except (RuntimeError, ReferenceError):  # tensors without storage (sparse, functional wrappers)
            continue
    return sum(seen.values())


class TensorBytesProbe:
    """Reports :func:`live_tensor_bytes` under ``label``; runs every time it is queued."""

    CATEGORY = "devtools"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "probe"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"label": ("STRING", {"default": "probe"})}, "optional": {"after": ("IMAGE",)}}

    @classmethod
    def IS_CHANGED(cls, label, after=None):
        return float("nan")  # never cached

    def probe(self, label, after=None):
        return {"ui": {"tensor_bytes": [live_tensor_bytes()], "label": [label]}}


NODE_CLASS_MAPPINGS = {"DevtoolsTensorBytes": TensorBytesProbe}
NODE_DISPLAY_NAME_MAPPINGS = {"DevtoolsTensorBytes": "Tensor Bytes (devtools)"}
