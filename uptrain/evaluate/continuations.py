"""Greedy continuations of fixed prompts: the first thing a person reads of a converted model.

Each prompt is encoded as training encodes text (the tokenizer's own special tokens) and continued
with transformers' `generate`, greedy (do_sample=False, whatever the checkpoint's generation_config
says), for a fixed number of new tokens; only the new tokens are decoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


@torch.no_grad()
def greedy_continuations(
    model: Any, tokenizer: Any, prompts: Sequence[str], new_tokens: int
) -> list[dict[str, str]]:
    """[{"prompt", "continuation"}] for each prompt, in order."""
    from transformers import GenerationConfig

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = GenerationConfig(max_new_tokens=new_tokens, do_sample=False, pad_token_id=pad)
    device = next(model.parameters()).device
    out = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
        generated = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
        text = tokenizer.decode(generated[0, ids.shape[1] :], skip_special_tokens=True)
        out.append({"prompt": prompt, "continuation": text})
    return out
