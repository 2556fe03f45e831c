"""What uptrain run (and train) added below the pipeline: a GGUF source dequantized once into
OUTPUT/source, and train.trainable, which freezes every parameter it does not name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from cli_helpers import assert_one_line_error
from safetensors.torch import load_file
from train_runs import reset_accelerate, train_in_process

import uptrain.checkpoint.gguf as gguf_module
from uptrain.checkpoint.gguf import dequantize_gguf
from uptrain.checkpoint.shards import MemoryShard, SourceCheckpoint


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch):
    """A .gguf path whose loading (transformers' GGUF reader, slow for a real file) is replaced by a tiny
    Llama held in memory, the way open_gguf_source presents one; counts the loads."""
    from transformers import AutoModelForCausalLM

    from uptrain.checkpoint.offline import TinyLlamaSpec, build_tiny_llama

    staged = build_tiny_llama(tmp_path / "staged", TinyLlamaSpec(max_positions=128))
    model = AutoModelForCausalLM.from_pretrained(staged)
    tensors = {k: v.clone() for k, v in model.state_dict().items()}
    import json

    config = json.loads((staged / "config.json").read_text())
    config["architectures"] = None  # as transformers' config of a GGUF file has it
    loads = []

    def open_fake(path, dtype=None, provenance=None):
        loads.append(path)
        return SourceCheckpoint(
            config=config,
            shards=[MemoryShard(dict(tensors), label=Path(path).name)],
            root=staged,
            provenance={"path": str(Path(path).resolve()), "gguf_file": Path(path).name},
        )

    monkeypatch.setattr(gguf_module, "open_gguf_source", open_fake)
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF not really")
    return path, tensors, loads


def test_a_gguf_source_is_dequantized_once_into_an_ordinary_checkpoint(fake_gguf, tmp_path):
    from transformers import AutoModelForCausalLM

    path, tensors, loads = fake_gguf
    out = dequantize_gguf(path, tmp_path / "source")
    saved = load_file(out / "model.safetensors")
    assert set(saved) == set(tensors) and all(torch.equal(saved[k], tensors[k]) for k in tensors)
    model = AutoModelForCausalLM.from_pretrained(out)  # loads as any checkpoint, tokenizer beside it
    assert model.config.num_key_value_heads == 8 and (out / "tokenizer.json").is_file()

    dequantize_gguf(path, tmp_path / "source")
    assert len(loads) == 1  # the same file: kept, not read again
    os.utime(path, ns=(1, 1))  # another file (as make sees it): read again
    dequantize_gguf(path, tmp_path / "source")
    assert len(loads) == 2


def test_train_converts_from_a_gguf_through_output_source(fake_gguf, tmp_path):
    import json

    path, _, loads = fake_gguf
    out = tmp_path / "run"
    reset_accelerate()
    r = train_in_process(out, "model.tiny=", f"model.convert.source={path}", "budget.max_steps=1")
    assert r.exit_code == 0, r.output
    converted = json.loads((out / "converted" / "uptrain.json").read_text())
    assert converted["source"]["path"] == str(out / "source")  # converted from the dequantized copy...
    assert converted["source"]["uptrain"]["dequantized"]["gguf"] == str(path.resolve())  # ...of the file
    for folder in ("source", "converted", "final"):  # the class serving engines choose their code by
        config = json.loads((out / folder / "config.json").read_text())
        assert config["architectures"] == ["LlamaForCausalLM"], folder
    reset_accelerate()
    r = train_in_process(
        out, "model.tiny=", f"model.convert.source={path}", "budget.max_steps=1", resume=True
    )
    assert r.exit_code == 0, r.output
    assert len(loads) == 1


def test_trainable_patterns_freeze_everything_else(tmp_path):
    out = tmp_path / "run"
    reset_accelerate()
    r = train_in_process(out, "budget.max_steps=2", "train.trainable=['*.k_proj.*', '*.v_proj.*']")
    assert r.exit_code == 0, r.output
    before = load_file(out / "converted" / "model.safetensors")
    after = load_file(out / "final" / "model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {k for k in before if k.endswith(("k_proj.weight", "v_proj.weight"))}
    assert "training 4,096 of" in r.output  # 2 layers x (k and v) x (2 KV heads x 8 dims) x 64 wide


def test_trainable_patterns_that_match_nothing_are_an_error(tmp_path):
    reset_accelerate()
    r = train_in_process(tmp_path / "run", "budget.max_steps=1", "train.trainable=['*.kproj*']")
    assert_one_line_error(r, "train.trainable", "matches no parameter", "model.layers.0.self_attn")
