"""The final save: a standard safetensors checkpoint with its tokenizer and an extended uptrain.json.

Sharded models (FSDP, DeepSpeed ZeRO-3) are gathered into one full state dict by
accelerator.get_state_dict on every process; only the main process writes, into a temporary
directory renamed to OUTPUT/final at the end. Weights go back to the dtype of the checkpoint that
was uptrained (training holds them in model.dtype, fp32 by default).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from uptrain.checkpoint.atomic import atomic_directory
from uptrain.checkpoint.dtypes import TORCH_DTYPES, dtype_name
from uptrain.checkpoint.provenance import update_provenance, write_provenance
from uptrain.checkpoint.serving_keys import with_architectures, with_dtype


def checkpoint_dtype(directory: Path) -> torch.dtype:
    """The dtype a checkpoint's config.json declares (float32 when it says nothing)."""
    try:
        config = json.loads((Path(directory) / "config.json").read_text())
    except (OSError, ValueError):
        return torch.float32
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    return TORCH_DTYPES.get(str(name), torch.float32)


def save_final(
    accelerator: Any,
    model: Any,
    tokenizer: Any,
    out: Path,
    student: Path,
    record: dict[str, Any],
    training: dict[str, Any],
    dtype: torch.dtype,
) -> None:
    """Write the trained model to `out`; every process must call it. uptrain.json is the student's
    record (source, conversion) plus a "training" section; a student that was itself uptrained
    is kept whole as the source."""
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        bare = accelerator.unwrap_model(model, keep_torch_compile=False)
        write_final(bare, strip_compile_prefix(state_dict), tokenizer, out, student, record, training, dtype)
    accelerator.wait_for_everyone()


def strip_compile_prefix(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Names without torch.compile's wrapper prefix (train.compile)."""
    return {k.removeprefix("_orig_mod."): v for k, v in state_dict.items()}


def write_final(
    bare: Any,
    state_dict: dict[str, Any],
    tokenizer: Any,
    out: Path,
    student: Path,
    record: dict[str, Any],
    training: dict[str, Any],
    dtype: torch.dtype,
) -> None:
    """Write `bare` (an unwrapped transformers model) with `state_dict` cast to `dtype` into `out`,
    whole or not at all; the main process only."""
    state_dict = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
    with atomic_directory(out, overwrite=True) as tmp:
        bare.save_pretrained(tmp, state_dict=state_dict)
        config_file = tmp / "config.json"
        config = with_architectures(with_dtype(json.loads(config_file.read_text()), dtype_name(dtype)))
        config_file.write_text(json.dumps(config, indent=2) + "\n")
        tokenizer.save_pretrained(tmp)
        base = {k: v for k, v in record.items() if k != "uptrain_version"}
        if "training" in base:
            base = {"source": {"path": str(student), "uptrain": base}}
        write_provenance(tmp, base)
        update_provenance(tmp, "training", training)
