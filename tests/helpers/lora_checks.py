"""Checks shared by the LoRA tests that compare two runs."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file
from tolerances import merged_lora_tolerance


def assert_merged_close(one, two, adapters: dict, atol: float) -> None:
    """final/ of both runs within tolerances.merged_lora_tolerance of each other."""
    config = json.loads((one / "adapter" / "adapter_config.json").read_text())
    big_a = max(v.abs().max().item() for k, v in adapters.items() if "lora_A" in k) + atol
    big_b = max(v.abs().max().item() for k, v in adapters.items() if "lora_B" in k) + atol
    bound = merged_lora_tolerance(atol, config["lora_alpha"] / config["r"], config["r"], big_a, big_b)
    f_one, f_two = (load_file(r / "final" / "model.safetensors") for r in (one, two))
    assert f_one.keys() == f_two.keys()
    for name in f_one:
        torch.testing.assert_close(f_two[name], f_one[name], rtol=0, atol=bound)
