"""`uptrain train` from a Pythia-style gpt_neox source: converted into phi with G KV heads, the
tokenizer carried over unchanged, and trained."""

import json

import torch
from method_helpers import save_char_tokenizer
from train_runs import losses, reset_accelerate, train_in_process
from transformers import AutoConfig, AutoModelForCausalLM


def test_train_converts_a_gpt_neox_source_into_phi(tmp_path):
    config = AutoConfig.for_model(
        "gpt_neox", vocab_size=96, hidden_size=64, num_attention_heads=8, num_hidden_layers=2,
        intermediate_size=96, rotary_pct=0.5, max_position_embeddings=256, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    torch.manual_seed(0)
    src = tmp_path / "pythia"
    AutoModelForCausalLM.from_config(config).save_pretrained(src)
    save_char_tokenizer(src)
    out = tmp_path / "run"
    reset_accelerate()
    r = train_in_process(out, "model.tiny=", f"model.convert.source={src}", "budget.max_steps=2")
    assert r.exit_code == 0, r.output
    converted = json.loads((out / "converted" / "config.json").read_text())
    assert converted["model_type"] == "phi" and converted["num_key_value_heads"] == 2
    assert (out / "converted" / "tokenizer.json").read_bytes() == (src / "tokenizer.json").read_bytes()
    assert sorted(losses(out)) == [1, 2]
