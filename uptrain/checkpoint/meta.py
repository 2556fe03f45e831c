"""A model's config.json without its weights (a local directory, or one file from the Hub), and the
model built from it on the meta device: parameter names and shapes, no memory, nothing downloaded
beyond config.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from uptrain.checkpoint.snapshot import is_hub_id
from uptrain.checkpoint.source import read_config
from uptrain.errors import UptrainError


def fetch_config(ref: str, revision: str | None = None) -> dict:
    """config.json of a local checkpoint directory, or of a Hub model (that one file is downloaded)."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return read_config(path)
    if not is_hub_id(ref):
        raise UptrainError(f"{ref} is neither a checkpoint directory nor a Hub id; check the path")
    from huggingface_hub import hf_hub_download

    try:
        return read_config(Path(hf_hub_download(ref, "config.json", revision=revision)).parent)
    except UptrainError:
        raise
    except Exception as exc:  # noqa: BLE001 - gated, missing, offline, HTTP: one line each way
        name = type(exc).__name__
        raise UptrainError(
            f"could not read config.json of {ref} from the Hub ({name}); check the id, your network, "
            "or HF_TOKEN for a gated model"
        ) from None


def meta_model(config: dict) -> Any | None:
    """The causal LM that `config` describes, built on the meta device (shapes only, no memory);
    None when transformers has no class for its model_type (custom code is never run here)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    settings = {k: v for k, v in config.items() if k not in ("model_type", "auto_map")}
    try:
        hf_config = AutoConfig.for_model(config.get("model_type", ""), **settings)
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(hf_config)
    except (ValueError, KeyError, TypeError, ImportError):
        return None
