"""`--target mla` where the target cannot hold the source exactly: the RoPE pair sets DeepseekV3's
rotary embedding holds, the shared RoPE key's least squares, and the factoring of [K_nope; V]."""

from __future__ import annotations

import json

import pytest
import torch
from method_helpers import save_char_tokenizer, structured_llama
from test_mla_exact import TEXT, logits, mla_settings

from uptrain.checkpoint.source import open_source
from uptrain.convert.convert import convert_checkpoint
from uptrain.convert.methods.metric import CalibratedMetric
from uptrain.convert.mla.factor import latent_factor
from uptrain.convert.mla.rope import PairSet, candidate_sets, choose_pairs


@pytest.mark.parametrize("pairs", [PairSet(0, 1, 4), PairSet(0, 7, 4), PairSet(5, 3, 4), PairSet(28, 1, 4)])
def test_the_rotary_embedding_turns_the_chosen_pairs_at_the_sources_frequencies(pairs):
    """DeepseekV3's own rotary module, built from the config uptrain writes, against the source's
    frequencies base^(-2j/hd) at the chosen pairs j. Both are computed in float32 (torch's pow):
    1e-5 relative is a few float32 roundings of an exponent of size <= 5 (base^... with ln base ~ 11.5)."""
    from transformers import DeepseekV3Config
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3RotaryEmbedding

    hd, base = 64, 100000.0
    config = DeepseekV3Config(
        hidden_size=64, num_attention_heads=1, qk_rope_head_dim=8, qk_nope_head_dim=56, v_head_dim=64,
        kv_lora_rank=8, q_lora_rank=None, rope_parameters=pairs.rope_parameters(base, hd),
    )  # fmt: skip
    rotary = DeepseekV3RotaryEmbedding(config)
    expected = base ** (-2 * torch.tensor(pairs.pairs, dtype=torch.float64) / hd)
    assert rotary.attention_scaling == 1.0
    torch.testing.assert_close(rotary.inv_freq.double(), expected, rtol=1e-5, atol=0)


def test_candidate_sets_are_every_evenly_spaced_set_that_fits():
    sets = candidate_sets(16, 6)  # 8 pairs, keep 3
    assert all(max(s.pairs) < 8 and len(set(s.pairs)) == 3 for s in sets)
    assert {tuple(s.pairs) for s in sets} >= {(0, 1, 2), (5, 6, 7), (0, 2, 4), (1, 4, 7), (0, 3, 6)}
    assert len(sets) == len({tuple(s.pairs) for s in sets}) == 6 + 4 + 2  # steps 1, 2, 3
    scores = torch.zeros(2, 8)
    scores[:, [1, 4, 7]] = 1.0  # the set that holds all the contribution is found
    best, share = choose_pairs(scores, 6)
    assert best.pairs == [1, 4, 7] and share == pytest.approx(1.0)


def test_weighted_factoring_is_the_best_rank_r_in_the_inputs_metric():
    """Eckart-Young in the metric: CARE's factors minimize E|(M - B A) x|^2, so a plain SVD can only be
    as good or worse there (up to float64 rounding, 1e-12 relative), and both are exact at full rank."""
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(12, 20, generator=g, dtype=torch.float64)
    mixing = torch.randn(20, 20, generator=g, dtype=torch.float64) * torch.logspace(
        0, -3, 20, dtype=torch.float64
    )
    second = torch.zeros(21, 21, dtype=torch.float64)
    second[:20, :20] = mixing @ mixing.T
    second[20, 20] = 1.0
    metric = CalibratedMetric(second)
    gram = metric.gram(False)

    def metric_error(b, a):
        d = rows - b @ a
        return float(torch.einsum("ni,ij,nj->", d, gram, d))

    care, plain = latent_factor(rows, 4, metric), latent_factor(rows, 4, None)
    assert metric_error(*care[:2]) <= metric_error(*plain[:2]) * (1 + 1e-12)
    assert metric_error(*care[:2]) < 0.5 * metric_error(*plain[:2])  # on anisotropic inputs, by far
    for full in (latent_factor(rows, 12, metric), latent_factor(rows, 12, None)):
        torch.testing.assert_close(full[0] @ full[1], rows, rtol=0, atol=1e-10)


def test_gqa_whose_keys_differ_by_rope_commuting_scales_converts_exactly(tmp_path):
    """Two KV heads whose keys are one base turned per RoPE pair by a complex scale (structured_llama
    with one family and no noise): one shared k_pe with the scales folded into q_proj holds them
    exactly, and full rank holds both heads' values. The weights are float32 (the source's and the
    output's): 1e-5 on logits of size O(1) is, as in test_mla_exact, >10x the float32 rounding of
    the weights (2^-24 relative) through two layers."""
    src = structured_llama(tmp_path / "src", families=1, spread=0.6, noise=0.0, kv_heads=2)
    save_char_tokenizer(src)
    text = tmp_path / "calibration.txt"
    text.write_text(TEXT)
    out = tmp_path / "mla"
    convert_checkpoint(open_source(src), out, mla_settings(text, 2 * 8, 8))
    ids = torch.randint(3, 96, (2, 40), generator=torch.Generator().manual_seed(1))
    expected, _ = logits(src, ids)
    got, _ = logits(out, ids)
    assert (got - expected).abs().max() < 1e-5
    record = json.loads((out / "uptrain.json").read_text())["conversion"]
    assert max(record["layer_figures"]["rope_key_error"]["layers"]) < 1e-12


def test_below_the_exact_limit_the_record_says_what_is_approximated(tmp_path):
    src = structured_llama(tmp_path / "src", families=2, kv_heads=4)
    save_char_tokenizer(src)
    text = tmp_path / "calibration.txt"
    text.write_text(TEXT)
    out = tmp_path / "mla"
    result = convert_checkpoint(open_source(src), out, mla_settings(text, 10, 4, mla_factor="svd"))
    record = json.loads((out / "uptrain.json").read_text())["conversion"]
    approx = record["approximations"]
    assert approx["exact"] is False
    assert approx["rope"].startswith("approximated: RoPE kept on 4 of 8 head dims")
    assert approx["rank"].startswith("approximated: [K_nope; V] (48 rows over the input) factored to rank 10")
    assert len(record["rope_pairs"]) == 2 and record["kv_lora_rank"] == 10
    assert 0 < record["layer_figures"]["latent_error"]["mean"] < 1
    assert result.kv_bytes_per_token_after == 2 * (10 + 4) * 4  # 2 layers, float32
    got, _ = logits(out, torch.tensor([[5, 6, 7, 8]]))
    assert torch.isfinite(got).all()


def test_a_pair_that_loses_its_rotation_keeps_the_mean_rotation_in_least_squares():
    """Scaling the query pair by c = E[e^{i theta d}] (rope.mean_rotations) is the best constant for
    the rotation it loses: the distance-weighted squared error of the scores is below the one with
    conj(c) (the wrong sign convention) and with no scale (MHA2MLA's plain removal). RoPE written out
    here as Llama applies it, independently of uptrain."""
    from uptrain.convert.methods.rope import rotary_pairs, scale_pairs
    from uptrain.convert.mla.rope import mean_rotations

    g = torch.Generator().manual_seed(0)
    hd, base = 8, 100.0
    weights = torch.rand(40, generator=g, dtype=torch.float64)
    c = mean_rotations(weights, base, hd)
    q, k = (
        torch.randn(hd, generator=g, dtype=torch.float64),
        torch.randn(hd, generator=g, dtype=torch.float64),
    )
    theta = base ** (-2 * torch.arange(hd // 2, dtype=torch.float64) / hd)

    def rope(x, position):
        a, b = x[: hd // 2], x[hd // 2 :]
        cos, sin = torch.cos(theta * position), torch.sin(theta * position)
        return torch.cat([a * cos - b * sin, b * cos + a * sin])

    def pair_products(x, y):
        return x[: hd // 2] * y[: hd // 2] + x[hd // 2 :] * y[hd // 2 :]

    true = torch.stack([pair_products(rope(q, 50 + d), rope(k, 50)) for d in range(40)])  # (d, pair)
    pairs = rotary_pairs("half", hd, hd)

    def error(scale):
        folded = scale_pairs(q.reshape(1, hd, 1), pairs, scale.reshape(1, -1)).reshape(hd)
        return (weights.unsqueeze(1) * (true - pair_products(folded, k)).pow(2)).sum(0)

    best = error(c)
    assert (best <= error(c.conj()) + 1e-12).all() and (best <= error(torch.ones_like(c)) + 1e-12).all()
    assert best.sum() < 0.9 * error(torch.ones_like(c)).sum()
