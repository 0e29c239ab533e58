"""Resuming on a GPU, checked on the CPU: the AdamW state goes where torch's fused kernel reads it
(the ``meta`` device stands in for CUDA), and the fp16 loss scale is part of the resume state."""

from __future__ import annotations

import torch

from ..p3s_support import import_pack_module

optimiser = import_pack_module("p3s_core.training.optimiser")


def adam_state(param: torch.nn.Parameter, step: float = 3.0) -> dict[str, torch.Tensor]:
    """Saved AdamW tensors of one parameter named ``w``, as a checkpoint holds them (CPU, float32)."""
    return {
        "w.step": torch.tensor(step),
        "w.exp_avg": torch.full(param.shape, 0.5),
        "w.exp_avg_sq": torch.full(param.shape, 0.25),
    }


def test_loaded_step_is_on_the_parameters_device_for_fused_adamw():
    """Fused (and capturable) AdamW reads ``step`` on the parameter's device; torch's own
    ``load_state_dict`` puts it there, a CPU ``step`` beside CUDA weights is an illegal access."""
    param = torch.nn.Parameter(torch.zeros(3, 2, device="meta"))
    fused = torch.optim.AdamW([param], lr=1e-3, fused=True)
    optimiser.load_optimizer_tensors(fused, adam_state(param), {"w": param})
    state = fused.state[param]
    assert state["step"].device == param.device and state["step"].dtype == torch.float32
    assert state["exp_avg"].device == param.device and state["exp_avg_sq"].device == param.device

    cpu = torch.nn.Parameter(torch.zeros(3, 2))
    plain = torch.optim.AdamW([cpu], lr=1e-3, foreach=False)
    optimiser.load_optimizer_tensors(plain, adam_state(cpu, 5.0), {"w": cpu})
    assert plain.state[cpu]["step"].device.type == "cpu" and float(plain.state[cpu]["step"]) == 5.0
    assert torch.equal(plain.state[cpu]["exp_avg"], torch.full((3, 2), 0.5))
