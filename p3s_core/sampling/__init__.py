"""Sampling: P3S applied while ComfyUI samples, weighted per step by the timestep scheduler.

:mod:`.injection` wraps the diffusion model so the copy runs and injects at each step;
:mod:`.schedule` holds the weight curves w(s) over denoising progress (the paper's sec. III-C,
[reconstructed] curve shapes).
"""
