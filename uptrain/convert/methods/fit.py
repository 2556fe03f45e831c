"""`fit`: the closed-form, calibration-weighted, query-aware shared K and V of each group.

In L-space (metric.py: a row's Euclidean norm is its output energy on calibration inputs):

Keys, per RoPE pair p. Each head h of the group has a complex row z_h (rope.py). Find one shared
row z and a complex scale c_h per head minimizing sum_h w_h |z_h - c_h z|^2: a rank-1 complex SVD
of the stack of sqrt(w_h) z_h. c_h commutes with RoPE, so it folds into the queries that read h
as conj(c_h). w_h is the energy of those queries on pair p (query_aware), or 1: an error on a
pair that the queries barely read costs little. With RoPE averaging the relative angle, this is
exactly the expected squared error of the attention scores (objective.py).
Dims RoPE does not rotate take any per-head map A_h: the shared rows are the top singular
subspace of the stacked head rows (weighted by the square root of the queries' second moment),
A_h = (head rows) * basis^T, folded into the queries as A_h^T.

Values: the same subspace fit, weighted by o_proj's Gram matrix of the query heads that read h
(output_aware); the maps B_h fold into o_proj's columns (O_i <- O_i B_h).

When the group's heads are linearly dependent (rank <= head_dim in total), the fit is exact.
"""

from __future__ import annotations

import torch

from uptrain.architectures import AttentionWeights
from uptrain.convert.methods.base import MethodContext
from uptrain.convert.methods.grouped import grouped_layer
from uptrain.convert.methods.metric import CalibratedMetric, shared_basis, small_eigh, sqrtm_psd
from uptrain.convert.methods.rope import complex_rows, scale_pairs, with_complex_rows

TINY = 1e-30


def rank_one_pairs(z: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each pair p, the shared row s_p and scales c_hp minimizing
    sum_h weights_hp |z_hp - c_hp s_p|^2.   z: (r, P, n) complex, weights: (r, P) > 0.
    The shared row has the heads' RMS norm and the largest head's scale is real and positive."""
    root = weights.sqrt()
    stack = (root.unsqueeze(-1) * z).transpose(0, 1)  # (P, r, n)
    values, vectors = small_eigh(stack @ stack.mH)  # (P, r, r): cheap, r is small
    u, s = vectors[..., -1], values[..., -1].clamp_min(0).sqrt()  # the top singular triple
    vh = (u.conj().unsqueeze(1) @ stack).squeeze(1) / s.clamp_min(TINY).unsqueeze(1)
    ref = u.gather(1, u.abs().argmax(1, keepdim=True)).squeeze(1)
    phase = ref / ref.abs().clamp_min(TINY)
    u, vh = u * phase.conj().unsqueeze(1), vh * phase.unsqueeze(1)
    norm = z.abs().pow(2).sum(-1).mean(0).sqrt().clamp_min(TINY)  # (P,)
    shared = norm.unsqueeze(1) * vh
    scales = (s.unsqueeze(1) * u / norm.unsqueeze(1)).T / root  # (r, P)
    return shared, scales


def subspace_fit(blocks: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shared rows (m, n) and per-head maps A (r, m, m) with blocks_h ~ A_h shared, minimizing
    sum_h |weights_h (blocks_h - A_h shared)|^2.   blocks: (r, m, n), weights: (r, m, m)."""
    m = blocks.shape[1]
    basis = shared_basis(weights @ blocks, m)
    scale = (blocks.pow(2).sum((-1, -2)).mean() / m).sqrt().clamp_min(TINY)
    return scale * basis, blocks @ basis.mT / scale


def _query_second_moments(
    queries: torch.Tensor, has_bias: bool, metric: CalibratedMetric, kv_heads: int
) -> torch.Tensor:
    """(KV, hd, hd): sum over the query heads reading each KV head of E[q q^T]; queries: (H, hd, n)
    rows over x (and the bias input when has_bias)."""
    moments = torch.einsum("hdn,nm,hem->hde", queries, metric.gram(has_bias), queries)
    return moments.reshape(kv_heads, -1, *moments.shape[1:]).sum(1)


def _output_grams(attn: AttentionWeights, per_kv: int) -> torch.Tensor:
    """(KV, hd, hd): sum over the query heads reading each KV head of O_i^T O_i."""
    o = attn.o.double()
    grams = torch.einsum("ohd,ohe->hde", o, o)
    return grams.reshape(attn.kv_heads, per_kv, *grams.shape[1:]).sum(1)


def fit_layer(
    attn: AttentionWeights,
    groups: int,
    ctx: MethodContext,
    query_aware: bool = True,
    output_aware: bool = True,
    mixed_values: bool = True,
) -> AttentionWeights:
    layer = grouped_layer(attn, groups, ctx, "fit")
    setup = layer.setup
    metric, pairs, per_kv = setup.metric, setup.pairs, setup.heads_per_kv
    value_metric = setup.mixed if mixed_values else metric
    kv, hd = attn.kv_heads, attn.k.shape[1]
    kb, vb, qb = layer.has_bias
    keys, values, queries, o = layer.keys, layer.values, layer.queries, layer.o
    keys_l = keys @ metric.factor(kb)  # rows in L-space, once for all groups (L is real, so this
    values_l = values @ value_metric.factor(vb)  # is also each RoPE pair's complex row times L)
    eye = torch.eye(hd, dtype=torch.float64).expand(kv, hd, hd)
    q_moments = _query_second_moments(queries, qb, metric, attn.kv_heads) if query_aware else eye
    o_grams = _output_grams(attn, per_kv) if output_aware else eye
    energy = q_moments.diagonal(dim1=-2, dim2=-1)  # (KV, hd)
    pair_weights = energy[:, pairs.real] + energy[:, pairs.imag]
    pair_weights = pair_weights + 1e-12 * pair_weights.mean().clamp_min(TINY)
    plain = pairs.plain

    for group in layer:
        g, hs, qs = group.index, group.heads, group.queries
        if pairs.count:
            z = complex_rows(keys_l[hs], pairs)
            shared, scales = rank_one_pairs(z, pair_weights[hs])
            layer.new_k[g] = with_complex_rows(layer.new_k[g], pairs, metric.to_rows(shared, kb))
            queries[qs] = scale_pairs(queries[qs], pairs, scales.conj().repeat_interleave(per_kv, 0))
        if plain.numel():
            blocks = keys_l[hs][:, plain]
            weights = sqrtm_psd(q_moments[hs][:, plain[:, None], plain])
            shared, maps = subspace_fit(blocks, weights)
            layer.new_k[g, plain] = metric.to_rows(shared, kb)
            queries[qs, plain] = maps.mT.repeat_interleave(per_kv, 0) @ queries[qs, plain]
        shared, maps = subspace_fit(values_l[hs], sqrtm_psd(o_grams[hs]))
        layer.new_v[g] = value_metric.to_rows(shared, vb)
        o[:, qs] = torch.einsum("oid,ide->oie", o[:, qs], maps.repeat_interleave(per_kv, 0))
    return layer.result()
