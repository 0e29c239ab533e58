"""P3S-Diffusion for ComfyUI: select a subject with points, learn it, generate it anew.

ComfyUI loads this package from ``custom_nodes/``; the nodes register through the V3
schema entry point ``comfy_entrypoint`` and the widgets live in ``web/``.
"""

from .nodes import comfy_entrypoint

WEB_DIRECTORY = "./web"

__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
