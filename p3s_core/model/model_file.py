"""The versioned ``.safetensors`` file of a trained P3S model [reconstructed: the paper has no file format].

A P3S model file holds what the model owns as tensors (format 2: its own copy weights for its
scope, LoRA factors, the zero-initialised injection layers, hint ZeroConv and the RNGR
encoder; format 1 held a whole U-Net copy in every file and still loads), and these metadata
entries (safetensors metadata values are strings):

* ``p3s.format``: ``"p3s-model"``, marks the file as ours;
* ``p3s.format_version``: integer, :data:`FORMAT_VERSION` for files this code writes;
* ``p3s.base``: base architecture the model was trained on (``"sd15"``);
* ``p3s.dtype``: storage dtype of the floating-point tensors (``fp32``, ``fp16`` or ``bf16``);
* ``p3s.config``: JSON object, the model's structure (what the loader needs to build modules;
  format 2 adds ``scope``, ``lora`` and the base U-Net's ``base_signature``/``base_fingerprint``);
* ``p3s.scope`` / ``p3s.base_fingerprint`` (format 2): the same, readable without JSON;
* ``p3s.training``: JSON object or ``null``, the training settings, for the record;
* ``p3s.resume`` (checkpoints only): JSON object ``{"epoch": k}`` (an fp16 run adds
  ``"grad_scaler": {"scale": s, "growth_tracker": n}``); the file then also holds the
  optimiser state as ``optimizer.*`` tensors (float32) to resume training exactly;
* ``modelspec.sai_model_spec`` / ``modelspec.architecture``: the common model-spec keys, so
  other tools can tell what the file is.

Writes are atomic: the file is written to a temporary name in the same folder, flushed to
disk and renamed into place, so a crash or error never leaves a half-written model behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..bases.registry import BASES, DEFAULT_BASE
from ..errors import P3SInputError
from ..validation import excerpt, model_file_name

FORMAT_NAME = "p3s-model"
FORMAT_VERSION = 2
EXTENSION = ".safetensors"

KEY_FORMAT = "p3s.format"
KEY_VERSION = "p3s.format_version"
KEY_BASE = "p3s.base"
KEY_DTYPE = "p3s.dtype"
KEY_CONFIG = "p3s.config"
KEY_TRAINING = "p3s.training"
KEY_SCOPE = "p3s.scope"
KEY_FINGERPRINT = "p3s.base_fingerprint"
KEY_RESUME = "p3s.resume"
OPTIMIZER_PREFIX = "optimizer."

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
MAX_HEADER_BYTES = 8 * 2**20
"""The largest safetensors header read: a full-scope checkpoint's tensor table and metadata need under 1 MB."""
FINITE_CHECK_CHUNK = 2**22
"""Known base architectures and their model-spec architecture names."""


@dataclass(frozen=True)
class P3SModelInfo:
    """What a P3S model file says about itself."""

    format_version: int
    base: str
    dtype: str
    config: dict
    training: dict | None = None
    scope: str = "full"
    base_fingerprint: str = ""
    resume: dict | None = None


@dataclass(frozen=True)
class P3SModelFile:
    """A loaded P3S model file (the ``P3S_MODEL`` type): raw tensors plus their description."""

    tensors: dict[str, torch.Tensor] = field(repr=False)
    info: P3SModelInfo
    name: str = ""


def save_p3s_model(
    path: str | os.PathLike,
    tensors: Mapping[str, torch.Tensor],
    config: Mapping,
    training: Mapping | None = None,
    dtype: str = "fp16",
    base: str = DEFAULT_BASE,
    overwrite: bool = False,
    resume: Mapping | None = None,
) -> None:
    """Write a P3S model file atomically; floating-point tensors are stored as ``dtype``.

    ``resume`` (checkpoints): ``{"epoch": k}``, stored as ``p3s.resume``; pass the optimiser
    state among ``tensors`` under ``optimizer.*``.

    Refuses (:class:`P3SInputError`) an existing file unless ``overwrite``, a name without the
    ``.safetensors`` extension, an unknown ``dtype`` or ``base``, an empty or non-tensor
    ``tensors`` and a ``config`` / ``training`` that JSON cannot hold.
    """
    path = Path(path)
    if path.suffix != EXTENSION:
        raise P3SInputError(f"P3S model files end in {EXTENSION} (ComfyUI lists only those): got {path.name!r}.")
    if dtype not in DTYPES:
        raise P3SInputError(f"Unknown storage dtype {dtype!r}: choose one of {', '.join(DTYPES)}.")
    if base not in BASES:
        raise P3SInputError(f"Unknown base architecture {base!r}: this pack supports {', '.join(BASES)}.")
    if not overwrite and path.exists():
        raise P3SInputError(f"{path.name} already exists: choose another name, or allow overwriting it.")
    storage = _prepare_tensors(tensors, DTYPES[dtype])
    metadata = {
        KEY_FORMAT: FORMAT_NAME,
        KEY_VERSION: str(FORMAT_VERSION),
        KEY_BASE: base,
        KEY_DTYPE: dtype,
        KEY_CONFIG: _to_json(config, "config", allow_none=False),
        KEY_TRAINING: _to_json(training, "training", allow_none=True),
        KEY_SCOPE: str(config.get("scope", "full")),
        KEY_FINGERPRINT: str(config.get("base_fingerprint", "")),
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": f"{BASES[base]}/p3s",
    }
    if resume is not None:
        metadata[KEY_RESUME] = _to_json(resume, "resume state", allow_none=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, storage, metadata, overwrite)


def load_p3s_model(
    path: str | os.PathLike, expected_base: str | None = DEFAULT_BASE
) -> tuple[dict[str, torch.Tensor], P3SModelInfo]:
    """Read a P3S model file: ``(tensors, info)``, tensors on the CPU in their stored dtype.

    Refuses (:class:`P3SInputError`) a missing, corrupt or truncated file, a ``.safetensors``
    file that is not a P3S model (a LoRA, a checkpoint), a file from a newer format version,
    and a model for another base architecture than ``expected_base`` (``None`` accepts any).
    """
    path = Path(path)
    if not path.is_file():
        raise P3SInputError(f"No P3S model file named {path.name}: check the name (models live in models/p3s).")
    _check_header_size(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            info = _read_info(path, metadata, handle.keys())
            if expected_base is not None and info.base != expected_base:
                raise P3SInputError(
                    f"{path.name} was trained on base model {info.base!r}, but this workflow uses "
                    f"{expected_base!r}: load a P3S model trained on the same base model."
                )
            tensors = {key: _finite(path, key, handle.get_tensor(key)) for key in handle.keys()}  # noqa: SIM118
    except P3SInputError:
        raise
    except Exception as exc:
        raise P3SInputError(
            f"{path.name} is not a readable .safetensors file ({exc}); it is corrupt or was cut off "
            "while copying: copy it again or re-train and save the model."
        ) from exc
    return tensors, info


def _check_header_size(path: Path) -> None:
    """Refuse a file whose safetensors header (tensor table and metadata) is larger than a P3S file needs."""
    with path.open("rb") as handle:
        head = handle.read(8)
    size = int.from_bytes(head, "little") if len(head) == 8 else 0
    if MAX_HEADER_BYTES < size <= path.stat().st_size - 8:  # a size beyond the file: corrupt, said below
        raise P3SInputError(
            f"{path.name} has a header of {size / 2**20:.1f} MB; a P3S model needs at most "
            f"{MAX_HEADER_BYTES // 2**20} MB for its tensor table and metadata: it is not a P3S model file, or "
            "it was damaged. Re-save the model with P3S Fine-tune."
        )


def _finite(path: Path, key: str, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` when every value is finite; read in chunks, so no second copy of it is made."""
    if tensor.is_floating_point():
        flat = tensor.reshape(-1)
        for start in range(0, flat.numel(), FINITE_CHECK_CHUNK):
            chunk = flat[start : start + FINITE_CHECK_CHUNK]
            if not torch.isfinite(chunk.float() if chunk.element_size() == 1 else chunk).all():
                raise P3SInputError(
                    f"{path.name}: tensor {key!r} holds NaN or infinite values, so the model would give black or "
                    "broken images: the training that saved it diverged, or the file was damaged. Load an earlier "
                    "checkpoint, or train again (a lower lr)."
                )
    return tensor


def resolve_model_path(
    root_dirs: Iterable[str | os.PathLike], name: str, must_exist: bool = True, input_name: str = "model_name"
) -> Path:
    """The file ``name`` inside one of ``root_dirs`` (the first that has it).

    ``name`` is relative to a models folder (sub-folders allowed, ``/`` or ``\\``) and checked by
    :func:`..validation.model_file_name` (absolute paths and ``..`` cannot reach outside the
    folders; errors name ``input_name``, never a server path). With ``must_exist=False`` a
    missing file resolves into the first folder (a place to save to).
    """
    roots = [Path(root) for root in root_dirs]
    if not roots:
        raise P3SInputError("No P3S model folder is configured (expected models/p3s).")
    relative = Path(model_file_name(name, input_name, EXTENSION))
    for root in roots:
        candidate = root / relative
        if candidate.is_file():
            return candidate
    if must_exist:
        raise P3SInputError(
            f"No P3S model named {excerpt(name)} in the p3s model folder(s): check the name or refresh the list (R)."
        )
    return roots[0] / relative


def next_free_path(path: Path) -> Path:
    """``path`` if no file has that name, else ``<stem>_00002<suffix>``, ``_00003``, ... (the first free).

    Numbered like ComfyUI's SaveImage and SaveLoRA, so re-queueing a workflow keeps every model.
    """
    if not path.exists():
        return path
    number = 2
    while True:
        candidate = path.with_name(f"{path.stem}_{number:05d}{path.suffix}")
        if not candidate.exists():
            return candidate
        number += 1


def _read_info(path: Path, metadata: Mapping[str, str], keys: Iterable[str]) -> P3SModelInfo:
    if metadata.get(KEY_FORMAT) != FORMAT_NAME or KEY_VERSION not in metadata:
        raise P3SInputError(
            f"{path.name} is a .safetensors file but not a P3S model ({_guess_kind(metadata, keys)}): load "
            "it with the matching ComfyUI loader; P3S Loader reads files saved by the P3S nodes."
        )
    try:
        version = int(metadata[KEY_VERSION])
    except ValueError:
        raise P3SInputError(
            f"{path.name} has a broken format version {metadata[KEY_VERSION]!r}: re-save the model."
        ) from None
    if version > FORMAT_VERSION:
        raise P3SInputError(
            f"{path.name} uses P3S model format {version}, newer than this pack reads ({FORMAT_VERSION}): "
            "update the P3S node pack."
        )
    if version < 1:
        raise P3SInputError(f"{path.name} has an invalid format version {version}: re-save the model.")
    config = _from_json(path, metadata.get(KEY_CONFIG), KEY_CONFIG, allow_none=False)
    training = _from_json(path, metadata.get(KEY_TRAINING, "null"), KEY_TRAINING, allow_none=True)
    resume = _from_json(path, metadata.get(KEY_RESUME, "null"), KEY_RESUME, allow_none=True)
    return P3SModelInfo(
        format_version=version,
        base=metadata.get(KEY_BASE, ""),
        dtype=metadata.get(KEY_DTYPE, ""),
        config=config,
        training=training,
        scope=str(config.get("scope", "full")),
        base_fingerprint=str(config.get("base_fingerprint", "")),
        resume=resume,
    )


def split_optimizer_state(tensors: Mapping[str, torch.Tensor]) -> tuple[dict, dict]:
    """``(model tensors, optimiser tensors without the prefix)`` of a loaded file."""
    model, optimizer = {}, {}
    for key, value in tensors.items():
        if key.startswith(OPTIMIZER_PREFIX):
            optimizer[key[len(OPTIMIZER_PREFIX) :]] = value
        else:
            model[key] = value
    return model, optimizer


def _guess_kind(metadata: Mapping[str, str], keys: Iterable[str]) -> str:
    names = list(keys)
    if any("lora" in key for key in names) or "ss_network_module" in metadata:
        return "it looks like a LoRA"
    if any(key.startswith("model.diffusion_model.") for key in names):
        return "it looks like a checkpoint"
    return "no p3s.format metadata"


def _prepare_tensors(tensors: Mapping[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    if not isinstance(tensors, Mapping) or not tensors:
        raise P3SInputError("Nothing to save: the P3S model has no tensors.")
    storage = {}
    for key, tensor in tensors.items():
        if not isinstance(key, str) or not isinstance(tensor, torch.Tensor):
            raise P3SInputError(f"Model entry {key!r} is not a named tensor: cannot save it.")
        tensor = tensor.detach().to("cpu")
        if tensor.is_floating_point():
            tensor = tensor.to(dtype)
        # A fresh, contiguous, ordinary tensor: safe for views, shared storage and inference mode.
        storage[key] = tensor.contiguous().clone()
    return storage


def _write_atomically(path: Path, tensors: dict, metadata: dict[str, str], overwrite: bool) -> None:
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(handle)
    temp = Path(temp_name)
    try:
        save_file(tensors, str(temp), metadata=metadata)
        with open(temp, "rb+") as stream:
            os.fsync(stream.fileno())
        if overwrite:
            os.replace(temp, path)
        else:
            _move_without_overwrite(temp, path)
        _fsync_folder(path.parent)
    finally:
        temp.unlink(missing_ok=True)


def _move_without_overwrite(temp: Path, path: Path) -> None:
    """Rename unless ``path`` exists; a hard link makes the check and the move one step where possible."""
    try:
        os.link(temp, path)
    except FileExistsError:
        raise P3SInputError(f"{path.name} already exists: choose another name, or allow overwriting it.") from None
    except OSError:  # no hard links on this file system
        if path.exists():
            raise P3SInputError(f"{path.name} already exists: choose another name, or allow overwriting it.") from None
        os.replace(temp, path)


def _fsync_folder(folder: Path) -> None:
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _to_json(value: Mapping | None, what: str, allow_none: bool) -> str:
    if value is None and allow_none:
        return "null"
    if not isinstance(value, Mapping):
        raise P3SInputError(f"The model's {what} must be a dict, not {type(value).__name__}.")
    try:
        return json.dumps(dict(value), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise P3SInputError(f"The model's {what} cannot be stored as JSON ({exc}).") from None


def _from_json(path: Path, text: str | None, key: str, allow_none: bool) -> dict | None:
    try:
        value = json.loads(text) if text is not None else None
    except json.JSONDecodeError:
        value = ...
    if (value is None and allow_none) or isinstance(value, dict):
        return value
    raise P3SInputError(f"{path.name} has missing or broken {key} metadata: re-save the model.")
