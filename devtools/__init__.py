"""Developer tools of the P3S pack: a real ComfyUI host for tests and the demo."""
