"""P3S-Diffusion for ComfyUI: select a subject with points, learn it, generate it anew.

ComfyUI loads this package from ``custom_nodes/``; the nodes register through the V3
schema entry point ``comfy_entrypoint`` and the widgets live in ``web/``.
"""

WEB_DIRECTORY = "./web"

# pytest imports this file as a lone module (the repository root is its rootdir, and the
# root is a package); only ComfyUI imports it as a package, where the nodes can load.
if __package__:
    from .nodes import comfy_entrypoint

    __all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
