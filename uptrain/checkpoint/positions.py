"""The longest input a model accepts, as its config states it: read the same way by training (from
config.json, a dict, before anything is loaded) and by evaluation (from a loaded model or its
transformers config)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Families spell the limit differently: Llama-style max_position_embeddings, GPT-2 n_positions (and
# n_ctx, its older alias), others max_sequence_length or seq_length. The first positive one counts.
POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


def _get(config: Any, key: str) -> Any:
    return config.get(key) if isinstance(config, Mapping) else getattr(config, key, None)


def _text_config(config: Any) -> Any:
    """The language model's part of a composite (vision-language) config; None when there is none."""
    if not isinstance(config, Mapping) and hasattr(config, "get_text_config"):
        text = config.get_text_config()
        return None if text is config else text
    return _get(config, "text_config")


def max_positions(model_or_config: Any) -> int | None:
    """The longest sequence a model's config says it accepts (None when it says nothing).

    Takes config.json as a dict, a transformers config, or a model (its `.config`); the top level
    is read first, then a composite config's text part (`text_config`)."""
    config = model_or_config
    if not isinstance(config, Mapping):
        config = getattr(config, "config", config)  # a model: its config
    for source in (config, _text_config(config)):
        if source is None:
            continue
        for key in POSITION_KEYS:
            value = _get(source, key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None
