"""One layer of a Llama-like attention as DeepseekV3's MLA tensors.

Per query head h reading KV head g, with the kept RoPE pairs P (rope.py) and the other dims N:
- RoPE part: one key shared by all heads. Per pair p in P, the KV heads' complex key rows z_gp (in
  the metric of the inputs, as `fit` works) are fitted by one shared row s_p and complex scales
  c_gp (least squares weighted by the queries' energy on p: fit.rank_one_pairs); conj(c_gp) folds
  into the queries of the heads reading g (RoPE commutes with complex scales). One KV head: exact.
- Position-free part: the rows [K_nope_g; V_g] of every KV head are factored to rank R (factor.py),
  B A; A (scaled, see factor.linear_norm_scale) is the latent part of kv_a_proj_with_mqa and kv_b_proj
  repeats g's rows of B for each query head reading g.
- Pairs that lose their rotation: the query pair is scaled by c_j = E[e^{i theta_j d}] over the
  measured attention distances (rope.mean_rotations), the least-squares constant for the rotation.
- q_proj per head: [q_N; q_P] with q_P as (re, im) pairs, rope_interleave's layout; o_proj unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from uptrain.architectures import AttentionWeights
from uptrain.convert.methods.fit import rank_one_pairs
from uptrain.convert.methods.metric import CalibratedMetric, sqrtm_psd
from uptrain.convert.methods.rope import RotaryPairs, complex_rows, scale_pairs
from uptrain.convert.mla.factor import latent_factor, linear_norm_scale
from uptrain.convert.mla.rope import PairSet, pair_energies


@dataclass(frozen=True)
class MlaShape:
    rank: int  # R, kv_lora_rank
    pairs: PairSet  # the kept RoPE pairs (D = 2 * count)
    factor: str  # care or svd
    norm_eps: float  # kv_a_layernorm's eps


def kept_pairs(head_dim: int, pairs: PairSet) -> RotaryPairs:
    """The kept pairs in rotate_half order (pair j: dims j, j + hd/2) and the position-free dims."""
    half = head_dim // 2
    real = torch.tensor(pairs.pairs)
    kept = set(real.tolist()) | set((real + half).tolist())
    plain = torch.tensor([d for d in range(head_dim) if d not in kept], dtype=torch.long)
    return RotaryPairs(real, real + half, plain)


def _interleaved(rows: torch.Tensor, pairs: RotaryPairs) -> torch.Tensor:
    """(..., hd, n) -> (..., D, n): the kept pairs' rows as (re_0, im_0, re_1, im_1, ...)."""
    return torch.stack([rows[..., pairs.real, :], rows[..., pairs.imag, :]], -2).flatten(-3, -2)


def shared_rope_key(
    attn: AttentionWeights, pairs: RotaryPairs, metric: CalibratedMetric
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(k_pe rows (D, in) interleaved, queries (H, hd, in) with the scales folded in, relative error of
    the fit in the metric, weighted by the queries' energy)."""
    per_kv = attn.heads // attn.kv_heads
    gram, lower = metric.gram(False), metric.factor(False)
    q, k = attn.q.double(), attn.k.double()
    z = complex_rows(k @ lower, pairs)  # (KV, P, in) in L-space
    energy = pair_energies(q, gram)  # (H, hd/2): the queries' energy per source pair
    weights = energy.reshape(attn.kv_heads, per_kv, -1).sum(1)[:, pairs.real]
    weights = weights + 1e-12 * weights.mean().clamp_min(1e-300)
    shared, scales = rank_one_pairs(z, weights)
    residual = (z - scales.unsqueeze(-1) * shared.unsqueeze(0)).abs().pow(2).sum(-1)
    error = float((weights * residual).sum() / (weights * z.abs().pow(2).sum(-1)).sum().clamp_min(1e-300))
    rows = metric.to_rows(shared, False)  # (P, in) complex
    k_pe = torch.stack([rows.real, rows.imag], 1).flatten(0, 1)
    queries = scale_pairs(q, pairs, scales.conj().repeat_interleave(per_kv, 0))
    return k_pe, queries, error


def _dropped_pairs(head_dim: int, kept: RotaryPairs) -> RotaryPairs:
    half = head_dim // 2
    real = torch.tensor([j for j in range(half) if j not in set(kept.real.tolist())], dtype=torch.long)
    return RotaryPairs(real, real + half, kept.real.new_zeros(0))


def aware_weights(
    attn: AttentionWeights, queries: torch.Tensor, plain: torch.Tensor, metric: CalibratedMetric
) -> torch.Tensor:
    """Row weights of [K_nope_g; V_g] for every KV head g (block diagonal): the keys' rows by the
    square root of the second moment of the queries that read them (an error there is a score error),
    the values' by that of o_proj's Gram matrix over the heads reading them (an output error), each
    part scaled to the same total weight on the calibration inputs, so that both count alike."""
    per_kv, kv = attn.heads // attn.kv_heads, attn.kv_heads
    gram, lower = metric.gram(False), metric.factor(False)
    nope = queries[:, plain]
    q2 = torch.einsum("hdi,ij,hej->hde", nope, gram, nope)
    q2 = q2.reshape(kv, per_kv, *q2.shape[1:]).sum(1)
    o = attn.o.double()
    o2 = torch.einsum("ohd,ohe->hde", o, o)
    o2 = o2.reshape(kv, per_kv, *o2.shape[1:]).sum(1)
    wk, wv = sqrtm_psd(q2), sqrtm_psd(o2)
    nk = (wk @ (attn.k.double()[:, plain] @ lower)).norm().clamp_min(1e-300)
    nv = (wv @ (attn.v.double() @ lower)).norm().clamp_min(1e-300)
    return torch.block_diag(*[torch.block_diag(wk[g] / nk, wv[g] / nv) for g in range(kv)])


def mla_layer(
    attn: AttentionWeights,
    shape: MlaShape,
    metric: CalibratedMetric,
    input_norm: torch.Tensor,
    rotations: torch.Tensor,
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The layer's q_proj, kv_a_proj_with_mqa, kv_a_layernorm and kv_b_proj weights (names relative to
    the attention module), and the fit's figures. rotations: c_j (hd/2,) for the dropped pairs."""
    hd, heads, kv = attn.k.shape[1], attn.heads, attn.kv_heads
    pairs = kept_pairs(hd, shape.pairs)
    k_pe, queries, rope_error = shared_rope_key(attn, pairs, metric)
    dropped = _dropped_pairs(hd, pairs)
    if dropped.count:
        c = rotations[dropped.real].to(torch.complex128)
        queries = scale_pairs(queries, dropped, c.expand(heads, -1))
    k_nope = attn.k.double()[:, pairs.plain]  # (KV, hd - D, in)
    stacked = torch.cat([k_nope, attn.v.double()], 1)  # (KV, 2 hd - D, in)
    weights = aware_weights(attn, queries, pairs.plain, metric) if shape.factor == "aware" else None
    b, a, latent_error = latent_factor(
        stacked.flatten(0, 1), shape.rank, None if shape.factor == "svd" else metric, weights
    )
    scale = linear_norm_scale(a, input_norm, shape.norm_eps)
    q_rows = torch.cat([queries[:, pairs.plain], _interleaved(queries, pairs)], 1)
    kv_b = b.reshape(kv, stacked.shape[1], shape.rank).repeat_interleave(heads // kv, 0)
    tensors = {
        "q_proj.weight": q_rows.flatten(0, 1),
        "kv_a_proj_with_mqa.weight": torch.cat([scale * a, k_pe], 0),
        "kv_a_layernorm.weight": torch.full((shape.rank,), math.sqrt(shape.norm_eps) / scale, dtype=a.dtype),
        "kv_b_proj.weight": kv_b.flatten(0, 1),
    }
    return tensors, {"rope_key_error": rope_error, "latent_error": latent_error}
