"""The pretrained base of the toy world: one seeded, fixed-step run, cached on disk.

``python -m benchmarks.toy_world.base`` (or any benchmark run) trains the tiny SD1.5-shaped
U-Net from scratch on captioned scenes of the base shapes (held-out combinations left out),
then caches the weights under ``$P3S_TOY_WORLD_CACHE`` (default ``~/.cache/p3s/toy_world``),
named by a hash of the settings, so a second run loads it. Not committed: 34 MB of float32
weights that one command rebuilds exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import world
from .host import NUM_TIMESTEPS, autograd_safe_attention, new_unet, noised, training_sigmas
from .text import CONTEXT_DIM, WordEncoder

CACHE_VERSION = 1


@dataclass(frozen=True)
class PretrainSettings:
    steps: int = 1200
    batch: int = 32
    lr: float = 2e-3
    warmup: int = 50
    seed: int = 0
    word_drop: float = 0.15
    caption_drop: float = 0.1

    def key(self) -> str:
        blob = json.dumps({"v": CACHE_VERSION, **asdict(self)}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


QUICK_PRETRAIN = PretrainSettings(steps=400)


def cache_dir() -> Path:
    return Path(os.environ.get("P3S_TOY_WORLD_CACHE", Path.home() / ".cache" / "p3s" / "toy_world"))


def _lr(step: int, settings: PretrainSettings) -> float:
    if step < settings.warmup:
        return settings.lr * (step + 1) / settings.warmup
    progress = (step - settings.warmup) / max(settings.steps - settings.warmup, 1)
    return settings.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def pretrain(settings: PretrainSettings, encoder: WordEncoder, log=print) -> tuple[torch.nn.Module, list[float]]:
    """Train the base from scratch; returns the U-Net and the loss per step."""
    torch.manual_seed(settings.seed)
    unet = new_unet(settings.seed, CONTEXT_DIM)
    unet.train()
    sigmas = training_sigmas()
    combos = world.base_combinations()
    gen = torch.Generator().manual_seed(settings.seed + 100)
    opt = torch.optim.AdamW(unet.parameters(), lr=settings.lr, weight_decay=0.0)
    losses: list[float] = []
    start = time.perf_counter()
    for step in range(settings.steps):
        scenes = [world.random_scene(gen, combos) for _ in range(settings.batch)]
        prompts = []
        for scene in scenes:
            if float(torch.rand(1, generator=gen)) < settings.caption_drop:
                prompts.append("")
            else:
                drop = tuple(bool(v) for v in (torch.rand(4, generator=gen) < settings.word_drop))
                prompts.append(scene.caption(drop))
        x0 = world.latents(scenes)
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, NUM_TIMESTEPS, (settings.batch,), generator=gen)
        pred = unet(noised(x0, noise, sigmas[t]), t.float(), context=encoder.encode(prompts))
        loss = torch.nn.functional.mse_loss(pred, noise)
        for group in opt.param_groups:
            group["lr"] = _lr(step, settings)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if log and (step + 1) % 100 == 0:
            recent = sum(losses[-100:]) / 100
            log(f"pretrain step {step + 1}/{settings.steps} loss {recent:.4f} ({time.perf_counter() - start:.0f} s)")
    unet.eval()
    for p in unet.parameters():
        p.requires_grad_(False)
    return unet, losses


def load_or_pretrain(settings: PretrainSettings, encoder: WordEncoder, log=print) -> tuple[torch.nn.Module, dict]:
    """The cached base if present, else pretrain and cache it. Info: path, cached, seconds."""
    path = cache_dir() / f"base-{settings.key()}.pt"
    start = time.perf_counter()
    if path.is_file():
        unet = new_unet(settings.seed, CONTEXT_DIM)
        unet.load_state_dict(torch.load(path, map_location="cpu"))
        unet.eval().requires_grad_(False)
        return unet, {"path": str(path), "cached": True, "seconds": time.perf_counter() - start}
    unet, losses = pretrain(settings, encoder, log)
    seconds = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    torch.save(unet.state_dict(), partial)
    partial.replace(path)
    meta = {"settings": asdict(settings), "seconds": seconds, "final_loss": sum(losses[-100:]) / 100}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    return unet, {"path": str(path), "cached": False, "seconds": seconds}


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the CI base (fewer steps)")
    args = parser.parse_args()
    chosen = QUICK_PRETRAIN if args.quick else PretrainSettings()
    with autograd_safe_attention():
        _, info = load_or_pretrain(chosen, WordEncoder())
    print(json.dumps(info))
