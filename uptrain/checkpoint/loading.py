"""Loading checkpoints with transformers: plain AutoModelForCausalLM, no remote code by default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from uptrain.checkpoint.dtypes import resolve_dtype
from uptrain.checkpoint.snapshot import is_hub_id
from uptrain.errors import UptrainError


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def load_error(kind: str, path: str | Path, exc: BaseException) -> UptrainError:
    """One line for a failed from_pretrained; custom code that was not allowed names the flag."""
    if "trust_remote_code" in str(exc):
        return UptrainError(
            f"{path} needs its own Python code to load its {kind} (auto_map in its config.json), which "
            "uptrain does not run unless asked; pass --trust-remote-code (in a train config: "
            "model.trust_remote_code: true) if you trust the source"
        )
    what = "model" if kind == "model" else f"a {kind} from"
    return UptrainError(f"cannot load {what} {path}: {_first_line(exc)}")


def check_remote_code(config: dict, where: str, trust_remote_code: bool) -> None:
    """Refuse, before anything runs, a checkpoint that transformers can load only with its own code
    (auto_map and a model_type it does not have built in), unless trusted."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if trust_remote_code or "auto_map" not in config or config.get("model_type") in CONFIG_MAPPING_NAMES:
        return
    raise UptrainError(
        f"{where} needs its own Python code to load (auto_map in its config.json, model_type "
        f"{config.get('model_type')!r}), which uptrain does not run unless asked; pass --trust-remote-code "
        "(in a train config: model.trust_remote_code: true) if you trust the source"
    )


def check_not_pickled(path: str | Path, allow_pickle: bool) -> None:
    """Refuse a local checkpoint whose only weights are pickled (.bin/.pt), which can run code when
    loaded, unless allowed."""
    root = Path(path)
    if allow_pickle or not root.is_dir() or any(root.glob("*.safetensors")):
        return
    if any(root.glob("*.bin")) or any(root.glob("*.pt")) or any(root.glob("*.pth")):
        raise UptrainError(
            f"{root} has only pickled weights, which can run arbitrary code when loaded; convert them to "
            "safetensors (uptrain convert SRC OUT --groups <its KV heads> --allow-pickle) or pass "
            "--allow-pickle if you trust the source"
        )


def load_causal_lm(
    path: str | Path,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
    gguf_file: str | None = None,
    allow_pickle: bool = False,
) -> Any:
    """AutoModelForCausalLM.from_pretrained in eval mode, with one-line errors. The checkpoint's own
    code runs only with trust_remote_code, pickled weights load only with allow_pickle."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch_dtype = dtype if isinstance(dtype, torch.dtype) else resolve_dtype(dtype)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    else:
        check_not_pickled(path, allow_pickle)
        if not allow_pickle:
            kwargs["use_safetensors"] = True
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise load_error("model", path, exc) from None
    if device is not None:
        model.to(device)
    return model.eval()


def load_tokenizer(path: str | Path, trust_remote_code: bool = False, gguf_file: str | None = None) -> Any:
    from transformers import AutoTokenizer

    if not Path(path).expanduser().exists() and not is_hub_id(str(path)):
        raise UptrainError(f"tokenizer {path} does not exist; check the path")
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    try:
        return AutoTokenizer.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise load_error("tokenizer", path, exc) from None
