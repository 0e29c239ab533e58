"""A test-only ComfyUI node for the batch tool's fault tests: an image after a chosen delay.

Linked into test servers' ``custom_nodes`` by :func:`devtools.model_files.link_batch_probe`
(never shipped: ``devtools/`` is outside the node archive). ``Slow Image (devtools)`` waits
``seconds`` in steps of 0.1 s, reporting each step as progress and stopping at an interrupt
(so a cancelled prompt frees the server at once), then returns a 16x16 image whose grey level is
``level``; ``fail`` raises instead, naming the node's ``label``. It runs every time it is queued.
"""

from __future__ import annotations

import time

import comfy.model_management
import comfy.utils
import torch


class SlowImage:
    CATEGORY = "devtools"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "seconds": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 3600.0, "step": 0.1}),
                "level": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}),
                "label": ("STRING", {"default": "item"}),
                "fail": ("BOOLEAN", {"default": False}),
            }
        }

    @classmethod
    def IS_CHANGED(cls, **_inputs):
        return float("nan")  # never cached

    def make(self, seconds, level, label, fail):
        steps = max(1, round(seconds / 0.1))
        bar = comfy.utils.ProgressBar(steps)
        for _ in range(steps):
            comfy.model_management.throw_exception_if_processing_interrupted()
            time.sleep(seconds / steps)
            bar.update(1)
        if fail:
            raise ValueError(f"{label}: failing as asked (fail=true)")
        return (torch.full((1, 16, 16, 3), float(level)),)


NODE_CLASS_MAPPINGS = {"DevtoolsSlowImage": SlowImage}
NODE_DISPLAY_NAME_MAPPINGS = {"DevtoolsSlowImage": "Slow Image (devtools)"}
