"""convert end to end on a sharded MHA Llama: shards, index, dtype, methods, side files, provenance."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from uptrain.checkpoint.source import open_source
from uptrain.config import ConvertSection
from uptrain.convert.convert import convert_checkpoint

K = "model.layers.1.self_attn.k_proj.weight"
V = "model.layers.0.self_attn.v_proj.weight"


def state_of(path):
    out = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def test_sharded_source_keeps_sharding_and_index(tiny_llama, tmp_path):
    shards = sorted(tiny_llama.glob("*.safetensors"))
    assert len(shards) >= 3
    (tiny_llama / "tokenizer_config.json").write_text('{"model_max_length": 128}')
    out = tmp_path / "out"
    result = convert_checkpoint(open_source(tiny_llama), out, ConvertSection(groups=2))

    index = json.loads((out / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert files == [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    total = 0
    for file in files:
        with safe_open(out / file, "pt") as f:
            for name in f.keys():  # noqa: SIM118
                assert index["weight_map"][name] == file
                t = f.get_tensor(name)
                total += t.numel() * t.element_size()
    assert index["metadata"]["total_size"] == total == result.bytes_written
    assert (out / "tokenizer_config.json").read_text() == '{"model_max_length": 128}'
    assert (out / "generation_config.json").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["num_key_value_heads"] == 2 and config["head_dim"] == 8
    assert not list(tmp_path.glob(".out.uptrain-*")), "no temporary directory may remain"


def test_provenance_records_source_and_conversion(tiny_llama, tmp_path):
    out = tmp_path / "out"
    convert_checkpoint(open_source(tiny_llama), out, ConvertSection(groups=1, method="first", seed=3))
    record = json.loads((out / "uptrain.json").read_text())
    import hashlib

    assert record["source"]["path"] == str(tiny_llama.resolve())
    assert (
        record["source"]["config_sha256"]
        == hashlib.sha256((tiny_llama / "config.json").read_bytes()).hexdigest()
    )
    c = record["conversion"]
    assert (c["heads"], c["kv_heads_before"], c["kv_heads_after"], c["method"], c["seed"]) == (
        8,
        8,
        1,
        "first",
        3,
    )
    assert record["uptrain_version"] and record["created"]


def test_first_keeps_the_first_head_of_each_group(tiny_llama, tmp_path):
    src = state_of(tiny_llama)
    convert_checkpoint(open_source(tiny_llama), tmp_path / "o", ConvertSection(groups=2, method="first"))
    out = state_of(tmp_path / "o")
    heads = src[K].reshape(8, 8, -1)
    assert torch.equal(out[K], torch.cat([heads[0], heads[4]]))


def test_random_is_seeded_and_scaled_by_initializer_range(tiny_llama, tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        convert_checkpoint(
            open_source(tiny_llama), tmp_path / name, ConvertSection(groups=1, method="random", seed=seed)
        )
    a, b, c = (state_of(tmp_path / n) for n in "abc")
    assert torch.equal(a[K], b[K]) and not torch.equal(a[K], c[K])
    assert a[K].shape == (8, 64)
    std = json.loads((tiny_llama / "config.json").read_text())["initializer_range"]
    values = torch.cat([a[n].flatten() for n in a if "k_proj" in n or "v_proj" in n])
    assert abs(values.std().item() - std) < 0.25 * std
    assert abs(values.mean().item()) < 0.01


@pytest.mark.parametrize("dtype,torch_dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_dtype_conversion(tiny_llama, tmp_path, dtype, torch_dtype):
    src = state_of(tiny_llama)
    convert_checkpoint(open_source(tiny_llama), tmp_path / "o", ConvertSection(groups=8, dtype=dtype))
    out = state_of(tmp_path / "o")
    assert all(t.dtype == torch_dtype for t in out.values())
    assert torch.equal(out[V], src[V].to(torch_dtype))
    assert json.loads((tmp_path / "o" / "config.json").read_text())["dtype"] == str(torch_dtype).split(".")[1]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "o")
    assert model.dtype == torch_dtype


def test_bf16_pooling_near_bf16_max_is_the_float64_mean(tmp_path):
    """bf16 weights near bf16's largest finite value (3.39e38), distinct per head and per element: their
    sum overflows float32 (max 3.40e38) and bf16 alike, so only a wider accumulation gives the mean."""
    from safetensors.torch import save_file
    from tiny_models import build_tiny

    src = build_tiny("llama", tmp_path / "src", kv_heads=8, dtype=torch.bfloat16)
    state = load_file(src / "model.safetensors")
    heads = 8
    base = torch.linspace(3.3e38, 2.6e38, heads, dtype=torch.float64).reshape(heads, 1, 1)
    seeded = torch.Generator().manual_seed(0)
    wobble = 1 - torch.rand(heads, 8, 64, generator=seeded, dtype=torch.float64) / 16
    state[K] = (base * wobble).reshape(64, 64).to(torch.bfloat16)
    save_file(state, src / "model.safetensors", metadata={"format": "pt"})

    convert_checkpoint(open_source(src), tmp_path / "o", ConvertSection(groups=1))
    pooled = state_of(tmp_path / "o")[K]

    per_head = state[K].reshape(heads, 8, 64)
    total = torch.zeros(8, 64, dtype=torch.float64)
    for h in range(heads):  # exact: 8 bf16 values (8-bit significands) of one binade fit float64's 53 bits
        total += per_head[h].double()
    expected = (total / heads).to(torch.bfloat16)  # one rounding, of the exact mean
    assert torch.isfinite(expected).all() and expected.abs().min() > 2e38
    assert torch.isinf(per_head.float().sum(dim=0)).all()  # a float32 accumulation overflows...
    assert torch.isinf(per_head.sum(dim=0)).all()  # ...and so does a bf16 one
    assert pooled.dtype == torch.bfloat16
    assert torch.equal(pooled, expected)


def test_gqa_source_reduced_further(tmp_path):
    from tiny_models import build_tiny

    src = build_tiny("mistral", tmp_path / "src", kv_heads=4)
    result = convert_checkpoint(open_source(src), tmp_path / "o", ConvertSection(groups=2))
    assert (result.dims.kv_heads, result.groups) == (4, 2)
    assert result.kv_bytes_per_token_before == 2 * result.kv_bytes_per_token_after == 2 * 2 * 2 * 2 * 8 * 4


def test_overwrite_replaces_existing_output(tiny_llama, tmp_path):
    out = tmp_path / "o"
    convert_checkpoint(open_source(tiny_llama), out, ConvertSection(groups=8))
    (out / "stale.txt").write_text("old")
    convert_checkpoint(open_source(tiny_llama), out, ConvertSection(groups=1), overwrite=True)
    assert not (out / "stale.txt").exists()
    assert json.loads((out / "config.json").read_text())["num_key_value_heads"] == 1
    assert {p.name for p in tmp_path.iterdir()} == {"src", "o"}


def test_source_card_license_is_recorded(tiny_llama, tmp_path):
    (tiny_llama / "README.md").write_text("---\nlicense: apache-2.0\ntags: [x]\n---\n# a model\n")
    convert_checkpoint(open_source(tiny_llama), tmp_path / "o", ConvertSection(groups=4))
    record = json.loads((tmp_path / "o" / "uptrain.json").read_text())
    assert record["source"]["license"] == "apache-2.0"
    assert not (tmp_path / "o" / "README.md").exists()  # the source's card describes another model


def test_conversion_leaves_torch_thread_count_as_it_found_it(tiny_llama, tmp_path, monkeypatch):
    import uptrain.convert.stream as convert_module

    seen = []
    real_write = convert_module.ShardWriter.write

    def write(self, name, tensor):
        seen.append(torch.get_num_threads())
        return real_write(self, name, tensor)

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(convert_module.ShardWriter, "write", write)
        convert_checkpoint(open_source(tiny_llama), tmp_path / "out", ConvertSection(groups=2))
        assert set(seen) == {1}  # mean pooling streams on one thread
        assert torch.get_num_threads() == 2

        def broken(self, name, tensor):
            raise RuntimeError("disk gone")

        monkeypatch.setattr(convert_module.ShardWriter, "write", broken)
        with pytest.raises(RuntimeError, match="disk gone"):
            convert_checkpoint(open_source(tiny_llama), tmp_path / "again", ConvertSection(groups=2))
        assert torch.get_num_threads() == 2
        assert not (tmp_path / "again").exists()
    finally:
        torch.set_num_threads(previous)
