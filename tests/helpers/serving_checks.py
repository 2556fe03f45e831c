"""What a serving engine reads from a checkpoint directory, checked the test's own way: against the class
plain transformers instantiates and against the safetensors headers, never through uptrain."""

from __future__ import annotations

import json
import re
from pathlib import Path

from safetensors import safe_open

# safetensors' dtype codes, as transformers names the dtypes in config.json
FLOAT_CODES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64"}


def stored_tensors(directory: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (safetensors dtype code, shape) of every tensor in the directory's safetensors files."""
    found = {}
    for path in sorted(Path(directory).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open is not a dict
                piece = f.get_slice(name)
                found[name] = (piece.get_dtype(), tuple(piece.get_shape()))
    return found


def _layer0_rows(stored: dict, projection: str) -> int | None:
    """Rows of layer 0's separate `projection` (q_proj, k_proj) weight, if the checkpoint has one."""
    pattern = re.compile(rf"\.0\.(self_attn|attn|attention)\.{projection}\.weight$")
    rows = [shape[0] for name, (_, shape) in stored.items() if pattern.search(name)]
    return rows[0] if rows else None


def assert_serving_keys(directory: Path, groups: int | None = None) -> dict:
    """config.json names the class AutoModelForCausalLM instantiates, declares the weights' dtype, and
    its KV heads, head_dim and tie_word_embeddings match the stored tensors; the tokenizer and the
    generation config are there. Returns config.json."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    directory = Path(directory)
    config = json.loads((directory / "config.json").read_text())
    model, info = AutoModelForCausalLM.from_pretrained(directory, output_loading_info=True)
    assert config["architectures"] == [type(model).__name__], (config["architectures"], type(model))
    # every parameter found at the shape the config implies (num_key_value_heads, head_dim, vocab...)
    assert not info["missing_keys"] and not info["mismatched_keys"], info

    stored = stored_tensors(directory)
    floats = {FLOAT_CODES[code] for code, _ in stored.values() if code in FLOAT_CODES}
    assert floats == {config["dtype"]}, (floats, config["dtype"])
    if "torch_dtype" in config:
        assert config["torch_dtype"] == config["dtype"]

    head = next(n for n, m in model.named_modules() if m is model.get_output_embeddings()) + ".weight"
    assert model.config.tie_word_embeddings == (head not in stored), (model.config.tie_word_embeddings, head)

    q_rows, k_rows = _layer0_rows(stored, "q_proj"), _layer0_rows(stored, "k_proj")
    if k_rows is not None:  # separate q/k/v projections: the family's own keys, written out
        assert q_rows == config["num_attention_heads"] * config["head_dim"]
        assert k_rows == config["num_key_value_heads"] * config["head_dim"]
        if groups is not None:
            assert config["num_key_value_heads"] == groups

    vocab = model.get_input_embeddings().weight.shape[0]
    assert len(AutoTokenizer.from_pretrained(directory)) <= vocab
    generation = GenerationConfig.from_pretrained(directory)
    eos = generation.eos_token_id if isinstance(generation.eos_token_id, list) else [generation.eos_token_id]
    assert all(i is None or 0 <= i < vocab for i in eos)
    return config
