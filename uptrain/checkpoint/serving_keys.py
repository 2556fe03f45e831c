"""The config.json keys that serving engines pick a model's code and dtype by, as uptrain writes them.

`architectures` names the model class. transformers itself loads by `model_type` (its auto mapping),
but vLLM and SGLang look their own implementation up by this name, and llama.cpp's
convert_hf_to_gguf.py refuses a config without it. uptrain writes the class that plain
AutoModelForCausalLM instantiates for the model_type, from transformers' own mapping, at every place
it writes a config.json (converted, dequantized GGUF source, final, merged LoRA).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from uptrain.errors import UptrainError


def causal_lm_architectures(model_type: str | None) -> list[str]:
    """The class names AutoModelForCausalLM instantiates for `model_type` (config.json's `architectures`)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    names = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type or "")
    if not names:
        raise UptrainError(
            f"transformers has no causal language model class for model_type {model_type!r}; "
            "check config.json's model_type"
        )
    return [names] if isinstance(names, str) else list(names)


def known_architectures(config: Mapping[str, Any]) -> bool:
    """Whether config.json's `architectures` is a non-empty list of classes transformers loads its
    model_type with."""
    value = config.get("architectures")
    if not isinstance(value, list) or not value:
        return False
    try:
        known = causal_lm_architectures(config.get("model_type"))
    except UptrainError:
        return False
    return all(name in known for name in value)


def with_architectures(config: Mapping[str, Any]) -> dict[str, Any]:
    """`config` with `architectures` naming its class: its own value where transformers knows every
    name in it for the model_type, otherwise the class transformers' mapping gives. A model_type that
    transformers does not have built in (a checkpoint's own code) keeps what it says."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    new = dict(config)
    if known_architectures(new) or new.get("model_type") not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return new
    new["architectures"] = causal_lm_architectures(new.get("model_type"))
    return new


def with_dtype(config: Mapping[str, Any], dtype: str) -> dict[str, Any]:
    """`config` declaring `dtype` (transformers' name, e.g. "bfloat16"): `dtype`, and `torch_dtype`
    where the config has that older key too, so that the two never disagree."""
    new = dict(config)
    new["dtype"] = dtype
    if "torch_dtype" in new:
        new["torch_dtype"] = dtype
    return new
