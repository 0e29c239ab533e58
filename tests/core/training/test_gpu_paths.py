"""What GPU users' runs depend on, checked on the CPU: host syncs per sampling step, real gradient
checkpointing, the training precision choice, freed gradients and an autograd-safe attention."""

from __future__ import annotations

import contextlib

import pytest
import torch

from ..p3s_support import ENCODER, import_pack_module, random_training_data, randomise_injection, sample

patching = import_pack_module("nodes.p3s_patching")
training_loop = import_pack_module("p3s_core.training.loop")
training_settings = import_pack_module("p3s_core.training.settings")
precision = import_pack_module("p3s_core.training.precision")
checkpointing = import_pack_module("p3s_core.training.checkpointing")

SYNC_METHODS = ("item", "cpu", "tolist", "__float__", "__int__", "__bool__")


class SyncCounter:
    """Counts the Tensor calls that make the host wait for the device (and device moves of ``.to``).

    On CUDA each of ``item``, ``cpu``, ``tolist``, ``float()``, ``int()``, ``bool()`` blocks until the
    device is done; on the CPU they are merely counted. ``moves`` counts ``.to(<device>)`` calls.
    """

    def __init__(self):
        self.calls = 0
        self.moves = 0
        self.armed = True

    @contextlib.contextmanager
    def installed(self, monkeypatch):
        for name in SYNC_METHODS:
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._counting(original))
        original_to = torch.Tensor.to

        def to(tensor, *args, **kwargs):
            if self.armed and ("device" in kwargs or any(isinstance(a, (torch.device, str)) for a in args[:1])):
                self.moves += 1
            return original_to(tensor, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, "to", to)
        yield self

    def _counting(self, original):
        def method(tensor, *args, **kwargs):
            if self.armed:
                self.calls += 1
            return original(tensor, *args, **kwargs)

        return method


def test_sampling_wrapper_syncs_once_per_model_call_and_never_in_attention_patches(base, hint, monkeypatch):
    p3s = patching.new_p3s_model(base, ENCODER)
    randomise_injection(p3s)
    steps = 6
    plain_counter, p3s_counter, patch_counter = SyncCounter(), SyncCounter(), SyncCounter()
    with plain_counter.installed(monkeypatch):
        sample(base, steps=steps)
    monkeypatch.undo()
    model = patching.apply_p3s(base, p3s, hint)
    patches = model.model_options["transformer_options"]["patches"]
    for name in ("attn1_output_patch", "attn2_output_patch"):  # count inside the P3S patches only

        def watched(patch):
            def run(n, extra):
                patch_counter.armed = True
                try:
                    return patch(n, extra)
                finally:
                    patch_counter.armed = False

            return run

        patches[name] = [watched(p) for p in patches[name]]
    calls = []
    wrapper_key = next(iter(model.wrappers["diffusion_model"]))
    inner = model.wrappers["diffusion_model"][wrapper_key][0]
    model.wrappers["diffusion_model"][wrapper_key] = [lambda *a, **k: calls.append(1) or inner(*a, **k)]
    with p3s_counter.installed(monkeypatch), patch_counter.installed(monkeypatch):
        patch_counter.armed = False
        sample(model, steps=steps)
    assert len(calls) == steps, "one model call per step (cond and uncond batched)"
    assert patch_counter.calls == 0 and patch_counter.moves == 0, "the attention patches never wait for the device"
    extra = p3s_counter.calls - plain_counter.calls
    # The current sigma once per call, the schedule once per sampling run.
    assert extra <= len(calls) + 1, f"{extra} syncs for {len(calls)} model calls"


def training_data(images: int = 1, seed: int = 4, size: int = 16):
    return random_training_data(images, seed, size)


def saved_activation_bytes_and_forwards(base, scope: str, checkpoint: bool) -> tuple[int, int, int]:
    """One training step: bytes saved for backward, leaf-module calls in the step, of which in backward."""
    p3s = patching.new_p3s_model(base, ENCODER, scope)
    unet = base.model.diffusion_model
    layers = {id(m): m for u in (p3s.copy_module(unet), unet) for m in checkpointing.unet_layers(u)}
    # The leaves inside the layers: a recomputation calls the layer's forward, which calls them.
    leaves = {id(leaf): leaf for m in layers.values() for leaf in m.modules() if not list(leaf.children())}
    phase = {"backward": False}
    counts = {"all": 0, "backward": 0}

    def hook(_module, _args):
        counts["all"] += 1
        counts["backward"] += int(phase["backward"])

    handles = [m.register_forward_pre_hook(hook) for m in leaves.values()]
    saved = {}

    def pack(tensor):
        if not phase["backward"]:
            saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    original_backward = torch.Tensor.backward

    def backward(tensor, *args, **kwargs):
        phase["backward"] = True
        return original_backward(tensor, *args, **kwargs)

    sigmas = base.get_model_object("model_sampling").sigmas
    settings = training_settings.TrainSettings(epochs=1, lr=1e-3, gradient_checkpointing=checkpoint)
    try:
        torch.Tensor.backward = backward
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            training_loop.train_p3s(p3s, unet, sigmas, training_data(), settings)
    finally:
        torch.Tensor.backward = original_backward
        for handle in handles:
            handle.remove()
    weights = {p.untyped_storage().data_ptr() for m in (p3s, unet) for p in m.parameters()}
    activations = sum(n for ptr, n in saved.items() if ptr not in weights)
    return activations, counts["all"], counts["backward"]


@pytest.mark.parametrize("scope", ["full", "attention", "injection"])
def test_gradient_checkpointing_recomputes_the_layers_and_saves_less(base, scope):
    plain_bytes, plain_forwards, plain_recomputed = saved_activation_bytes_and_forwards(base, scope, False)
    ckpt_bytes, ckpt_forwards, ckpt_recomputed = saved_activation_bytes_and_forwards(base, scope, True)
    assert plain_recomputed == 0
    # Every layer on the backward path runs again; only the frozen U-Net's first layers, which see
    # neither a trained weight nor an injection yet, need no backward and are not recomputed.
    assert ckpt_recomputed >= 0.9 * plain_forwards, f"{ckpt_recomputed} of {plain_forwards} recomputed"
    assert ckpt_forwards == plain_forwards + ckpt_recomputed
    assert ckpt_bytes < 0.5 * plain_bytes, f"saved for backward: {ckpt_bytes} vs {plain_bytes} bytes"


def test_gradients_are_freed_right_after_the_optimiser_step(base, monkeypatch):
    p3s = patching.new_p3s_model(base, ENCODER, "injection")
    seen = []
    original_step = torch.optim.Optimizer.step

    def after_step(step, total, history):
        seen.append([p.grad is None for p in p3s.parameters()])

    def forward_pre_hook(_module, _args):  # the next forward starts without the last step's gradients
        seen.append([p.grad is None for p in p3s.parameters()])

    handle = base.model.diffusion_model.register_forward_pre_hook(forward_pre_hook)
    sigmas = base.get_model_object("model_sampling").sigmas
    try:
        training_loop.train_p3s(
            p3s,
            base.model.diffusion_model,
            sigmas,
            training_data(images=2),
            training_settings.TrainSettings(epochs=1, lr=1e-3),
            on_step=after_step,
        )
    finally:
        handle.remove()
        monkeypatch.setattr(torch.optim.Optimizer, "step", original_step)
    assert len(seen) >= 3 and all(all(flags) for flags in seen)


def test_fused_adamw_where_the_device_has_it():
    params = [torch.nn.Parameter(torch.zeros(3))]
    optimizer = precision.make_optimizer(params, 1e-3)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["fused"] is True, "torch fuses AdamW on the CPU and CUDA"
    half = [torch.nn.Parameter(torch.zeros(3, dtype=torch.float16))]
    assert not precision.make_optimizer(half, 1e-3).defaults["fused"]


def test_auto_precision_asks_for_native_bf16_only(monkeypatch):
    asked = []

    def bf16_only_emulated(including_emulation: bool = True) -> bool:  # a T4 / V100 / RTX 20
        asked.append(including_emulation)
        return including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", bf16_only_emulated)
    cuda = torch.device("cuda")
    chosen = precision.training_precision("auto", cuda, torch.float32)
    assert asked == [False]
    assert (chosen.autocast, chosen.scaled) == (torch.float16, True), "fp16 + GradScaler without native bf16"
    native = precision.training_precision("auto", cuda, torch.float32, bf16_supported=lambda d: True)
    assert (native.autocast, native.scaled) == (torch.bfloat16, False)
    for dtype in (torch.float16, torch.bfloat16):  # a half base computes in its own dtype, no second cast
        half = precision.training_precision("auto", cuda, dtype)
        assert (half.compute, half.autocast, half.scaled) == (dtype, None, dtype == torch.float16)
    assert precision.training_precision("fp32", cuda, torch.float32).autocast is None
    assert precision.training_precision("auto", torch.device("cpu"), torch.float32) == precision.TrainingPrecision(
        None, None, False
    )


def test_training_uses_an_autograd_safe_attention_when_memory_is_short(base, monkeypatch):
    """ComfyUI's CPU default attention (sub-quadratic) chunks with an in-place ``exp`` when free
    memory is short; ``get_free_memory`` is patched to report 1 MB so that it takes that path."""
    import comfy.ldm.modules.attention as attention
    import comfy.model_management

    assert attention.optimized_attention is attention.attention_sub_quad
    monkeypatch.setattr(comfy.model_management, "get_free_memory", lambda *a, **k: (2**20, 2**20))
    q = torch.randn(1, 64, 32, requires_grad=True)
    with pytest.raises(RuntimeError):  # what training hit before
        attention.attention_sub_quad(q, q, q, 8).sum().backward()
    p3s = patching.new_p3s_model(base, ENCODER, "injection")
    sigmas = base.get_model_object("model_sampling").sigmas
    history = training_loop.train_p3s(
        p3s, base.model.diffusion_model, sigmas, training_data(), training_settings.TrainSettings(epochs=1, lr=1e-3)
    )
    assert len(history.total) == 1 and torch.isfinite(torch.tensor(history.total)).all()
    out = precision.autograd_safe_attention(q, q, q, 8)
    reference = attention.attention_basic(q.detach(), q.detach(), q.detach(), 8)
    torch.testing.assert_close(out.detach(), reference, rtol=1e-4, atol=1e-5)


def test_the_attention_capture_adds_at_most_one_sync_per_model_call(base, hint, monkeypatch):
    """The capture reads each call's sigma once and the schedule once per run; its sums stay on the
    maps' device until they are read (on CUDA every other read would stall the sampler per layer)."""
    capture = import_pack_module("nodes.attention_patching")
    maps = import_pack_module("p3s_core.inspection.attention_maps")
    p3s = patching.new_p3s_model(base, ENCODER)
    randomise_injection(p3s)
    applied = patching.apply_p3s(base, p3s, hint)
    recorder = maps.AttentionRecorder(maps.CaptureSettings())
    captured = capture.attach_attention_capture(applied, recorder)
    steps = 6
    alone, with_capture = SyncCounter(), SyncCounter()
    with alone.installed(monkeypatch):
        sample(applied, steps=steps)
    monkeypatch.undo()
    with with_capture.installed(monkeypatch):
        sample(captured, steps=steps)
    monkeypatch.undo()
    assert recorder.calls("frozen") == steps and recorder.maps("frozen") is not None, "the capture recorded"
    extra = with_capture.calls - alone.calls
    assert extra <= steps + 1, f"the capture added {extra} syncs over {steps} model calls"


def test_p3s_layers_left_elsewhere_cross_once_per_run_and_are_dropped_after(base, hint, monkeypatch):
    """Where ComfyUI leaves the injection and hint layers off the sampler's device or dtype (lowvram,
    novram: emulated by keeping them in float64 beside a float32 U-Net), each weight is cast once
    per sampling run, not once per model call, and nothing cast is held after the run."""
    p3s = patching.new_p3s_model(base, ENCODER)
    randomise_injection(p3s)
    model = patching.apply_p3s(base, p3s, hint)  # placed for the base: float32 here
    own = [p3s.hint_conv, *p3s.injection.modules()]
    for module in own:
        module.to(torch.float64)
    weights = {p.data_ptr() for m in own for p in m.parameters(recurse=False)}
    casts = []
    original_to = torch.Tensor.to

    def to(tensor, *args, **kwargs):
        out = original_to(tensor, *args, **kwargs)
        if out.dtype != tensor.dtype and tensor.data_ptr() in weights:  # a weight (or a view of it) cast
            casts.append(tensor.data_ptr())
        return out

    steps = 4
    monkeypatch.setattr(torch.Tensor, "to", to)
    out = sample(model, steps=steps)
    monkeypatch.undo()
    assert torch.isfinite(out).all()
    assert casts, "the float64 layers were cast to the U-Net's dtype"
    assert len(casts) == len(set(casts)), f"{len(casts)} casts of {len(set(casts))} weights in {steps} steps"
    key = next(iter(model.wrappers["diffusion_model"]))
    run_end = model.wrappers["outer_sample"][f"{key}_run"][0]
    assert run_end.run_weights.held_bytes() == 0, "the run's cast weights are dropped when sampling ends"
