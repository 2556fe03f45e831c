"""GPT-2 becomes gpt_bigcode: Conv1D transposed into Linear, [Q|K|V] reordered per head, config
translated; the same logits as GPT-2 before pooling, MQA (the only other count gpt_bigcode holds)
after it."""

import json
import shutil

import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli
from fused_models import build_source, group_mean, layer_qkv, mean_expanded_state, read_config, read_state
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from uptrain.checkpoint.source import open_source
from uptrain.config import ConvertSection
from uptrain.convert.convert import convert_checkpoint

IDS = torch.tensor([[1, 5, 9, 13, 17, 21, 25, 29]])
H, HIDDEN = 8, 64
# float32 rounding: Conv1D's addmm on (in, out) weights and Linear on (out, in) sum in another order
ATOL = 1e-5


def logits_of(path):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids=IDS).logits, model


@pytest.fixture
def gpt2(tmp_path):
    return build_source("gpt2", tmp_path / "gpt2")


@pytest.mark.parametrize("tied", [True, False])
def test_translation_gives_gpt2_logits(tmp_path, tied):
    src = build_source("gpt2", tmp_path / "gpt2", tie_word_embeddings=tied)
    out = tmp_path / "bigcode"
    result = convert_checkpoint(open_source(src), out, ConvertSection(groups=H))
    assert (result.model_type, result.target_model_type) == ("gpt2", "gpt_bigcode")

    config = read_config(out)
    assert config["model_type"] == "gpt_bigcode" and config["architectures"] == ["GPTBigCodeForCausalLM"]
    assert config["multi_query"] is False and config["activation_function"] == "gelu_new"
    assert not {k for k in config if k.startswith("summary_") or k == "scale_attn_by_inverse_layer_idx"}

    src_state, state = read_state(src), read_state(out)
    for n, t in src_state.items():  # explicit: every GPT-2 tensor, where gpt_bigcode keeps it
        if n.endswith(("mlp.c_fc.weight", "mlp.c_proj.weight", "attn.c_proj.weight")):
            assert torch.equal(state[n], t.T), n  # Conv1D (in, out) -> Linear (out, in)
        elif n.endswith("attn.c_attn.weight"):
            per_head = state[n].reshape(H, 3, HIDDEN // H, HIDDEN)  # gpt_bigcode MHA: (H, 3, head_dim)
            q, k, v = t.T.split(HIDDEN)  # GPT-2: columns [Q | K | V]
            for i, part in enumerate((q, k, v)):
                assert torch.equal(per_head[:, i], part.reshape(H, HIDDEN // H, HIDDEN)), (n, i)
        elif n.endswith("attn.c_attn.bias"):
            q, k, v = (part.reshape(H, HIDDEN // H) for part in t.split(HIDDEN))
            assert torch.equal(state[n], torch.stack([q, k, v], 1).reshape(-1))
        else:
            assert torch.equal(state[n], t), n
    assert set(state) == set(src_state)

    gpt2_logits, _ = logits_of(src)
    logits, model = logits_of(out)
    assert type(model).__name__ == "GPTBigCodeForCausalLM"
    torch.testing.assert_close(logits, gpt2_logits, rtol=0, atol=ATOL)
    assert torch.equal(logits.argmax(-1), gpt2_logits.argmax(-1))


def test_pooled_to_mqa_is_mean_pooled_gpt2(gpt2, tmp_path):
    out = tmp_path / "mqa"
    convert_checkpoint(open_source(gpt2), out, ConvertSection(groups=1))
    config, state = read_config(out), read_state(out)
    assert config["multi_query"] is True and config["num_key_value_heads"] == 1
    src_config, src_state = read_config(gpt2), read_state(gpt2)
    for layer in range(2):
        for part in ("weight", "bias"):
            sq, sk, sv = layer_qkv(src_state, src_config, layer, part)
            oq, ok, ov = layer_qkv(state, config, layer, part)  # gpt_bigcode MQA: rows [Q | k | v]
            assert torch.equal(oq, sq)
            torch.testing.assert_close(ok, group_mean(sk, 1).float(), rtol=1e-6, atol=1e-7)
            torch.testing.assert_close(ov, group_mean(sv, 1).float(), rtol=1e-6, atol=1e-7)

    # the same function as GPT-2 whose K/V heads are all replaced by their mean
    pooled_gpt2 = tmp_path / "pooled-gpt2"
    shutil.copytree(gpt2, pooled_gpt2)
    save_file(
        mean_expanded_state(src_state, src_config, 1), pooled_gpt2 / "model.safetensors", {"format": "pt"}
    )
    reference, _ = logits_of(pooled_gpt2)
    logits, model = logits_of(out)
    torch.testing.assert_close(logits, reference, rtol=0, atol=ATOL)
    with torch.no_grad():
        cache = model(input_ids=IDS, use_cache=True).past_key_values
        generated = model.generate(IDS, max_new_tokens=3, min_new_tokens=3, do_sample=False, pad_token_id=0)
    assert [layer.keys.shape[1] for layer in cache.layers] == [1, 1]
    assert generated.shape == (1, IDS.shape[1] + 3)


def test_hub_style_checkpoint_without_prefix_with_mask_buffers(gpt2, tmp_path):
    """openai-community/gpt2 stores GPT2Model names (h.0..., wte) with attn.bias causal-mask buffers,
    and old configs may omit activation_function (GPT-2's default, gelu_new, is not gpt_bigcode's)."""
    hub = tmp_path / "hub"
    hub.mkdir()
    config = read_config(gpt2)
    del config["activation_function"]
    config["n_ctx"] = config["n_positions"]
    (hub / "config.json").write_text(json.dumps(config))
    state = {n.removeprefix("transformer."): t for n, t in read_state(gpt2).items()}
    n_pos = config["n_positions"]
    for layer in range(2):
        state[f"h.{layer}.attn.bias"] = torch.tril(torch.ones(n_pos, n_pos)).view(1, 1, n_pos, n_pos)
        state[f"h.{layer}.attn.masked_bias"] = torch.tensor(-1e4)
    save_file(state, hub / "model.safetensors", {"format": "pt"})

    out = tmp_path / "bigcode"
    convert_checkpoint(open_source(hub), out, ConvertSection(groups=H))
    assert set(read_state(out)) == set(read_state(gpt2))
    assert read_config(out)["activation_function"] == "gelu_new" and "n_ctx" not in read_config(out)
    gpt2_logits, _ = logits_of(gpt2)
    logits, _ = logits_of(out)
    torch.testing.assert_close(logits, gpt2_logits, rtol=0, atol=ATOL)


def test_groups_gpt_bigcode_cannot_hold(gpt2, tmp_path):
    r = run_cli("convert", gpt2, tmp_path / "out", "--groups", "2")
    assert_one_line_error(
        r, "gpt_bigcode holds 1 (multi_query) or all 8 (mha) KV heads", "choose one of [1, 8]"
    )
    assert not (tmp_path / "out").exists()


def test_layer_scaled_attention_is_refused(gpt2, tmp_path):
    config = read_config(gpt2)
    config["scale_attn_by_inverse_layer_idx"] = True
    (gpt2 / "config.json").write_text(json.dumps(config))
    r = run_cli("convert", gpt2, tmp_path / "out", "--groups", "1")
    assert_one_line_error(r, "scale_attn_by_inverse_layer_idx=true", "gpt_bigcode", "cannot be converted")
    assert not (tmp_path / "out").exists()


def test_cli_verify_and_inspect(gpt2, tmp_path):
    facts = json.loads(run_cli("inspect", gpt2, "--json").output)
    assert (facts["model_type"], facts["kv_heads"], facts["valid_groups"]) == ("gpt2", H, [1, H])
    r = run_cli("convert", gpt2, tmp_path / "out", "--groups", "8", "--verify")
    assert r.exit_code == 0, r.output
    assert "converted gpt2 -> gpt_bigcode: 8 query heads, 8 -> 8 KV heads" in r.output
    row = [line for line in r.output.splitlines() if "│" in line and "%" in line]
    cells = [c.strip() for c in row[0].strip("│ ").split("│")]
    assert float(cells[0]) < ATOL and cells[1] == "100%"
    record = json.loads((tmp_path / "out" / "uptrain.json").read_text())["conversion"]
    assert (record["model_type_after"], record["layout_before"], record["layout_after"]) == (
        "gpt_bigcode",
        "mha",
        "mha",
    )
