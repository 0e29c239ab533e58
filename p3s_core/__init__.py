"""P3S-Diffusion in plain torch/numpy/OpenCV, usable without ComfyUI.

The method's stages, one sub-package each, imports flowing upward only:
``bases`` and ``selection`` -> ``model`` -> ``training`` and ``sampling`` -> ``inspection``.
The shared helpers (``errors``, ``validation``, ``batches``) sit here, under every stage.
Parts marked [stated] in docstrings follow the paper; parts marked [reconstructed] are this
pack's decisions where the paper's text is lost (see docs/method.md and docs/architecture.md).
"""
