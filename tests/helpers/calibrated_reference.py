"""fit_layer, aligned_layer and layer_error as they were before issue 24 made them faster (each row
times S once, no repeated heads, real products instead of complex ones, small eigensolvers on one
thread): kept verbatim as the reference the new code must reproduce.
Test-only; tests/convert/test_fit_math_speed.py compares the two on small random problems."""

from __future__ import annotations

import torch

from uptrain.architectures import AttentionWeights
from uptrain.convert.methods.aligned import align_phases, align_rotations
from uptrain.convert.methods.base import MethodContext
from uptrain.convert.methods.fit import (
    TINY,
    _output_grams,
    _query_second_moments,
    rank_one_pairs,
    subspace_fit,
)
from uptrain.convert.methods.grouped import grouped_layer
from uptrain.convert.methods.metric import CalibratedMetric, sqrtm_psd, with_bias
from uptrain.convert.methods.objective import LayerError
from uptrain.convert.methods.rope import RotaryPairs, complex_rows, scale_pairs, with_complex_rows


def _heads(attn: AttentionWeights) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v over x~ = [x; 1] (biases as a last column), each query head's K/V row, and o."""
    q = with_bias(attn.q, attn.q_bias, True)
    k = with_bias(attn.k, attn.k_bias, True)
    v = with_bias(attn.v, attn.v_bias, True)
    per_kv = attn.heads // attn.kv_heads
    return q, k.repeat_interleave(per_kv, 0), v.repeat_interleave(per_kv, 0), attn.o.double()


def _cross(a: torch.Tensor, s: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-by-row a S b^H for batched complex rows (..., n)."""
    return ((a @ s.to(a.dtype)) * b.conj()).sum(-1)


def reference_layer_error(
    source: AttentionWeights,
    new: AttentionWeights,
    metric: CalibratedMetric,
    pairs: RotaryPairs,
    value_metric: CalibratedMetric | None = None,
) -> LayerError:
    """Scores on inputs with second moment `metric`, values on `value_metric` (default: the same;
    the calibrated methods pass the moments of the inputs as attention mixes them)."""
    s = metric.gram(True)
    q, k, v, o = _heads(source)
    q2, k2, v2, o2 = _heads(new)
    key = key_total = torch.zeros((), dtype=torch.float64)
    if pairs.count:
        zq, zk, zq2, zk2 = (complex_rows(t, pairs) for t in (q, k, q2, k2))
        aq, bk = _cross(zq, s, zq).real, _cross(zk, s, zk).real
        aq2, bk2 = _cross(zq2, s, zq2).real, _cross(zk2, s, zk2).real
        cross = (_cross(zq, s, zq2).conj() * _cross(zk, s, zk2)).real
        key_total = key_total + (aq * bk).sum() / 2
        key = key + (aq * bk + aq2 * bk2 - 2 * cross).sum() / 2
    if pairs.plain.numel():
        p = pairs.plain
        qq, kk = q[:, p] @ s @ q[:, p].mT, k[:, p] @ s @ k[:, p].mT
        qq2, kk2 = q2[:, p] @ s @ q2[:, p].mT, k2[:, p] @ s @ k2[:, p].mT
        qx, kx = q2[:, p] @ s @ q[:, p].mT, k[:, p] @ s @ k2[:, p].mT
        trace = lambda a, b: (a * b.mT).sum()  # noqa: E731 - tr(a b), batched and summed
        key_total = key_total + trace(qq, kk)
        key = key + trace(qq, kk) + trace(qq2, kk2) - 2 * trace(qx, kx)
    oo, oo2, ox = (torch.einsum("ohd,ohe->hde", a, b) for a, b in ((o, o), (o2, o2), (o, o2)))
    s = (value_metric or metric).gram(True)
    vv, vv2, vx = v @ s @ v.mT, v2 @ s @ v2.mT, v2 @ s @ v.mT
    value_total = (oo * vv.mT).sum()
    value = value_total + (oo2 * vv2.mT).sum() - 2 * (ox * vx.mT).sum()
    return LayerError(float(key), float(key_total), float(value), float(value_total))


def reference_fit_layer(
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
    lk, lv = metric.factor(kb), value_metric.factor(vb)
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
            z = complex_rows(keys[hs], pairs) @ lk.to(torch.complex128)
            shared, scales = rank_one_pairs(z, pair_weights[hs])
            layer.new_k[g] = with_complex_rows(layer.new_k[g], pairs, metric.to_rows(shared, kb))
            queries[qs] = scale_pairs(queries[qs], pairs, scales.conj().repeat_interleave(per_kv, 0))
        if plain.numel():
            blocks = keys[hs][:, plain] @ lk
            weights = sqrtm_psd(q_moments[hs][:, plain[:, None], plain])
            shared, maps = subspace_fit(blocks, weights)
            layer.new_k[g, plain] = metric.to_rows(shared, kb)
            queries[qs, plain] = maps.mT.repeat_interleave(per_kv, 0) @ queries[qs, plain]
        shared, maps = subspace_fit(values[hs] @ lv, sqrtm_psd(o_grams[hs]))
        layer.new_v[g] = value_metric.to_rows(shared, vb)
        o[:, qs] = torch.einsum("oid,ide->oie", o[:, qs], maps.repeat_interleave(per_kv, 0))
    return layer.result()


def reference_aligned_layer(attn: AttentionWeights, groups: int, ctx: MethodContext) -> AttentionWeights:
    layer = grouped_layer(attn, groups, ctx, "aligned")
    metric, pairs, per_kv = layer.setup.metric, layer.setup.pairs, layer.setup.heads_per_kv
    kb, vb, _ = layer.has_bias
    keys, values, queries, o = layer.keys, layer.values, layer.queries, layer.o
    lk, lv = metric.factor(kb), metric.factor(vb)
    plain = pairs.plain

    for group in layer:
        g, hs, qs = group.index, group.heads, group.queries
        if pairs.count:
            merged, c = align_phases(complex_rows(keys[hs], pairs) @ lk.to(torch.complex128))
            layer.new_k[g] = with_complex_rows(layer.new_k[g], pairs, metric.to_rows(merged, kb))
            # head h's keys ~ conj(c_h) merged, so its queries take conj(conj(c_h)) = c_h
            queries[qs] = scale_pairs(queries[qs], pairs, c.repeat_interleave(per_kv, 0))
        if plain.numel():
            merged, rotations = align_rotations(keys[hs][:, plain] @ lk)
            layer.new_k[g, plain] = metric.to_rows(merged, kb)
            # keys_h ~ R_h^T merged: queries q -> R_h q
            queries[qs, plain] = rotations.repeat_interleave(per_kv, 0) @ queries[qs, plain]
        merged, rotations = align_rotations(values[hs] @ lv)
        layer.new_v[g] = metric.to_rows(merged, vb)
        o[:, qs] = torch.einsum("oid,ied->oie", o[:, qs], rotations.repeat_interleave(per_kv, 0))
    return layer.result()
