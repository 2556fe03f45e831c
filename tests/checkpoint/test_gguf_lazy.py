"""A GGUF source read one tensor at a time (uptrain/checkpoint/gguf_shard.py) gives exactly the
tensors transformers' own from_pretrained(gguf_file=) gives: the same names in the same order (the
tied head dropped, as unique_tensors drops it), the same dtypes, the same bits. Tiny files of several
architectures are written here with the gguf package; the real one is SmolLM2's Q4_1 file."""

from __future__ import annotations

import json

import pytest
import torch
from test_gguf import smollm2_gguf, smollm2_reference
from tiny_gguf import write_tiny_gguf

import uptrain.checkpoint.gguf_shard as gguf_shard
from uptrain.checkpoint.gguf import gguf_weights, unique_tensors
from uptrain.checkpoint.gguf_shard import GGUFShard
from uptrain.checkpoint.shards import MemoryShard


def reference(folder, name, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """What uptrain read before: transformers' whole model, its state dict without tied copies."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=name, dtype=dtype)
    return unique_tensors(model.state_dict())


def assert_same_tensors(shard, expected: dict[str, torch.Tensor]) -> None:
    assert shard.names() == list(expected)
    for name, want in expected.items():
        got = shard.load(name)
        assert got.dtype == want.dtype == shard.meta(name).dtype, name
        assert tuple(got.shape) == tuple(want.shape) == shard.meta(name).shape, name
        bits = got.contiguous().view(torch.uint8), want.contiguous().view(torch.uint8)
        assert torch.equal(*bits), name


@pytest.mark.parametrize(
    ("model_type", "arch", "extra"),
    [
        ("llama", None, {}),  # Q/K un-permuted by transformers' LlamaTensorProcessor
        ("llama", None, {"tie_word_embeddings": True}),
        ("qwen2", None, {}),  # q/k/v biases
        ("gemma2", None, {"tie_word_embeddings": True}),  # Gemma2TensorProcessor: norms stored as w + 1
        ("gemma3_text", "gemma3", {}),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tiny_gguf_is_read_lazily_and_exactly(tmp_path, model_type, arch, extra, dtype):
    path = write_tiny_gguf(tmp_path / "tiny.gguf", model_type, arch, **extra)
    expected = reference(tmp_path, path.name, dtype)
    _, shard = gguf_weights(tmp_path, path.name, dtype)
    assert isinstance(shard, GGUFShard)
    if extra.get("tie_word_embeddings"):
        assert "lm_head.weight" not in shard.names()
    assert_same_tensors(shard, expected)


def test_what_transformers_does_more_than_map_one_to_one_is_loaded_whole(tmp_path, monkeypatch):
    """A file missing a tensor (transformers initializes it), or a processor that merges tensors (a
    mixture of experts; faked here by trusting no processor): transformers loads the model whole."""
    dropped = write_tiny_gguf(tmp_path / "dropped.gguf", "llama", drop=("model.norm.weight",))
    _, shard = gguf_weights(tmp_path, dropped.name, torch.float32)
    assert isinstance(shard, MemoryShard)
    assert shard.names() == list(reference(tmp_path, dropped.name))

    path = write_tiny_gguf(tmp_path / "tiny.gguf", "qwen2")
    monkeypatch.setattr(gguf_shard, "ONE_TO_ONE_PROCESSORS", frozenset())
    _, shard = gguf_weights(tmp_path, path.name, torch.float32)
    assert isinstance(shard, MemoryShard)
    assert_same_tensors(shard, reference(tmp_path, path.name))


@pytest.mark.slow
def test_smollm2_gguf_is_read_lazily_and_exactly(tmp_path):
    """Every tensor of the real Q4_1 file against transformers' own loading, the staged config and
    generation config, the calibration pass's layers loaded from the lazy source, and dequantize_gguf's
    streamed safetensors file."""
    from safetensors.torch import load_file

    from uptrain.architectures import get_architecture, read_dims
    from uptrain.checkpoint.gguf import dequantize_gguf, open_gguf_source, staged_config
    from uptrain.convert.calibration.skeleton import Skeleton

    gguf = smollm2_gguf()
    source = open_gguf_source(gguf)
    (shard,) = source.shards
    assert isinstance(shard, GGUFShard)
    ref = smollm2_reference()
    expected = unique_tensors(ref.state_dict())
    assert "lm_head.weight" not in expected  # tied to the embedding: dropped, as before
    assert_same_tensors(shard, expected)
    config = json.loads(json.dumps(staged_config(ref, torch.float32)))
    assert json.loads((source.root / "config.json").read_text()) == config
    ref.generation_config.save_pretrained(tmp_path / "ref")
    staged = (source.root / "generation_config.json").read_text()
    assert staged == (tmp_path / "ref" / "generation_config.json").read_text()

    arch = get_architecture("llama")  # the calibration pass's model, a part at a time, from the lazy source
    skeleton = Skeleton(source, arch, read_dims(arch, source.config), "fp32")
    skeleton.load_embeddings(torch.device("cpu"))
    last = source.config["num_hidden_layers"] - 1
    skeleton.load_layer(last, torch.device("cpu"))
    loaded = {n: p for n, p in skeleton.model.named_parameters() if not p.is_meta}
    assert {n for n in loaded if n.startswith("model.layers.")} == {
        n for n in expected if n.startswith(f"model.layers.{last}.")
    }
    assert all(torch.equal(p, expected[n]) for n, p in loaded.items())

    saved = load_file(dequantize_gguf(gguf, tmp_path / "dequantized") / "model.safetensors")
    assert set(saved) == set(expected)
    assert all(torch.equal(saved[k], expected[k]) for k in expected)
