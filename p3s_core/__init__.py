"""P3S-Diffusion in plain torch/numpy/OpenCV, usable without ComfyUI.

Parts marked [stated] in docstrings follow the paper; parts marked [reconstructed] are this
pack's decisions where the paper's text is lost (see docs/method.md).
"""
