"""The calibrated methods where the output's layout differs from the source's: gpt2 (translated to an
MHA gpt_bigcode first, then to MQA), MHA falcon (to multi_query at G = 1, new_decoder_architecture
at other G) and falcon new_decoder_architecture (kept). At G = KV every method must give the
source's function back; at smaller G the output loads and its cache holds G heads."""

import json

import pytest
import torch
from cli_helpers import run_cli
from fused_models import build_source
from method_helpers import save_char_tokenizer
from transformers import AutoModelForCausalLM

IDS = torch.randint(3, 96, (2, 12), generator=torch.Generator().manual_seed(5))
TEXT = "The quick brown fox jumps over the lazy dog. Grouped-query attention shares keys and values.\n" * 30
FLAGS = ["--calibration-tokens", "400", "--calibration-seq-len", "50", "--refine-steps", "2"]


@torch.no_grad()
def logits(path):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return model(input_ids=IDS).logits, model


def convert(src, out, groups, method, text):
    r = run_cli(
        "convert", src, out, "-g", str(groups), "--method", method, "--calibration-data", text, *FLAGS
    )
    assert r.exit_code == 0, r.output
    return json.loads((out / "config.json").read_text())


@pytest.mark.parametrize(
    "name,kv,groups,flags",
    [
        ("gpt2", 8, 1, {"model_type": "gpt_bigcode", "multi_query": True}),
        ("falcon_mha", 8, 1, {"multi_query": True, "new_decoder_architecture": False}),
        ("falcon_mha", 8, 2, {"new_decoder_architecture": True, "num_kv_heads": 2}),
        ("falcon_new", 4, 2, {"new_decoder_architecture": True, "num_kv_heads": 2}),
    ],
)
def test_calibrated_methods_change_layout_where_the_class_needs_it(tmp_path, name, kv, groups, flags):
    src = build_source(name, tmp_path / "src")
    save_char_tokenizer(src)
    text = tmp_path / "calibration.txt"
    text.write_text(TEXT)
    ref, _ = logits(src)
    convert(src, tmp_path / "exact", kv, "fit", text)
    got, _ = logits(tmp_path / "exact")
    assert float((got - ref).norm() / ref.norm()) < 1e-4  # fit is exact at G = KV (float64 solves)
    config = convert(src, tmp_path / "out", groups, "similar+fit+refine", text)
    assert {k: config[k] for k in flags} == flags
    got, model = logits(tmp_path / "out")
    assert torch.isfinite(got).all()
    record = json.loads((tmp_path / "out" / "uptrain.json").read_text())["conversion"]
    assert record["method_steps"] == ["similar", "fit", "refine"] and record["kv_heads_after"] == groups
