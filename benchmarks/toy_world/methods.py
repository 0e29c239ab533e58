"""The methods compared: P3S (through ``p3s_core.training.loop.train_p3s``) and a DreamBooth-like baseline."""

from __future__ import annotations

import copy

import torch
from torch import nn

from p3s_core.model.injection_layers import AUTO_INJECTION_RANK, resolve_injection_rank
from p3s_core.model.p3s_model import P3SModel
from p3s_core.training.loop import train_p3s
from p3s_core.training.settings import TrainingData, TrainSettings

from .host import NUM_TIMESTEPS, noised, training_sigmas
from .subject import ENCODER_CONFIG


class ZeroHint(nn.Module):
    """Stands in for the subject encoder: the hint is all zeros (the "no encoder" ablation)."""

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)

    def forward(self, tokens: torch.Tensor, mask_grid: torch.Tensor, latent: torch.Tensor, latent_mask=None):
        return torch.zeros_like(latent)


# The pack's SD1.5 defaults scaled to this U-Net's widths (32-128 instead of 320-1280).
INJECTION_RANK = AUTO_INJECTION_RANK  # the pack's -1: LOW_INJECTION_RANK in every scope
LOW_INJECTION_RANK = 8  # the pack's 64
LORA_RANK = 4  # the pack's 32


def train_p3s_model(
    unet: nn.Module,
    data: TrainingData,
    settings: TrainSettings,
    zero_hint: bool = False,
    injection_rank: int = INJECTION_RANK,
    hint_region: str = "subject",
) -> tuple[P3SModel, list[float]]:
    """A fresh P3S model of ``unet`` (of ``settings.scope``, else full) fine-tuned on ``data``.

    Returns the model and its L_LDM per step.
    """
    scope = settings.scope or "full"
    p3s = new_p3s_model(unet, scope, injection_rank, hint_region, settings.seed)
    if zero_hint:
        p3s.encoder = ZeroHint(p3s.encoder.config)
    history = train_p3s(p3s, unet, training_sigmas(), data, settings)
    p3s.eval()
    return p3s, history.ldm


def new_p3s_model(unet: nn.Module, scope: str, injection_rank: int, hint_region: str, seed: int) -> P3SModel:
    """An untrained P3S model whose random initialisation (encoder, low-rank ``down`` factors)
    follows ``seed`` alone, not the rows trained before it in the process (as P3S Fine-tune
    seeds it)."""
    injection_rank = resolve_injection_rank(injection_rank, LOW_INJECTION_RANK)
    encoder = {**ENCODER_CONFIG, "hint_region": hint_region}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return P3SModel.from_base(
            unet, encoder, scope=scope, lora_rank=LORA_RANK, lora_alpha=LORA_RANK, injection_rank=injection_rank
        )


def dreambooth_like(unet: nn.Module, data: TrainingData, settings: TrainSettings) -> tuple[nn.Module, list[float]]:
    """Fine-tune a copy of the base itself on the references: same steps, lr, dropout and draws as P3S."""
    tuned = copy.deepcopy(unet).train()
    for p in tuned.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(tuned.parameters(), lr=settings.lr)
    sigmas = training_sigmas()
    gen = torch.Generator().manual_seed(settings.seed)
    refs = data.latents.shape[0]
    losses = []
    for _ in range(settings.epochs):
        for rows in torch.randperm(refs, generator=gen).split(settings.batch_size):
            x0 = data.latents[rows]
            noise = torch.randn(x0.shape, generator=gen)
            t = torch.randint(0, NUM_TIMESTEPS, (len(rows),), generator=gen)
            drop = torch.rand(len(rows), generator=gen) < settings.dropout
            context = torch.where(drop.view(-1, 1, 1), data.uncond.expand_as(data.contexts[rows]), data.contexts[rows])
            loss = nn.functional.mse_loss(tuned(noised(x0, noise, sigmas[t]), t.float(), context=context), noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    tuned.eval().requires_grad_(False)
    return tuned, losses
