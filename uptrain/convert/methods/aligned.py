"""`aligned`: Jin et al. 2024, "Align Attention Heads Before Merging Them: An Effective Way for
Converting MHA to GQA". Rotate each head of a group onto the others before averaging them.

Rotations are orthogonal Procrustes solutions on the calibration outputs (in L-space, metric.py,
the Euclidean inner product of two rows is the correlation of their outputs on calibration inputs):
- keys: restricted to rotations that commute with RoPE, one unit complex number per RoPE pair
  (folded into the queries that read the head); dims RoPE leaves alone get a full rotation;
- values: a full rotation per head, folded into o_proj's columns.
The reference is the group's running mean (generalized Procrustes, from the first head), and the
merged head is the mean of the aligned heads, as in the paper. No query or output weighting:
that is what `fit` adds.
"""

from __future__ import annotations

import torch

from uptrain.architectures import AttentionWeights
from uptrain.convert.methods.base import MethodContext
from uptrain.convert.methods.grouped import grouped_layer
from uptrain.convert.methods.metric import small_svd
from uptrain.convert.methods.rope import complex_rows, scale_pairs, with_complex_rows

ITERATIONS = 4


def align_phases(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit complex c (r, P) with c_h z_h ~ mean: z (r, P, n). Returns (mean of aligned, c)."""
    reference = z[0]
    for _ in range(ITERATIONS):
        inner = (z * reference.conj()).sum(-1)  # <z_h, reference> per pair
        c = inner.conj() / inner.abs().clamp_min(1e-30)
        c = torch.where(inner.abs() > 0, c, torch.ones_like(c))
        reference = (c.unsqueeze(-1) * z).mean(0)
    return reference, c


def align_rotations(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthogonal R (r, m, m) with R_h blocks_h ~ mean: blocks (r, m, n). Returns (mean, R)."""
    reference = blocks[0]
    for _ in range(ITERATIONS):
        u, _, vh = small_svd(reference @ blocks.mT)
        rotations = u @ vh
        reference = (rotations @ blocks).mean(0)
    return reference, rotations


def aligned_layer(attn: AttentionWeights, groups: int, ctx: MethodContext) -> AttentionWeights:
    layer = grouped_layer(attn, groups, ctx, "aligned")
    metric, pairs, per_kv = layer.setup.metric, layer.setup.pairs, layer.setup.heads_per_kv
    kb, vb, _ = layer.has_bias
    keys, values, queries, o = layer.keys, layer.values, layer.queries, layer.o
    keys_l, values_l = keys @ metric.factor(kb), values @ metric.factor(vb)  # L-space, once per layer
    plain = pairs.plain

    for group in layer:
        g, hs, qs = group.index, group.heads, group.queries
        if pairs.count:
            merged, c = align_phases(complex_rows(keys_l[hs], pairs))
            layer.new_k[g] = with_complex_rows(layer.new_k[g], pairs, metric.to_rows(merged, kb))
            # head h's keys ~ conj(c_h) merged, so its queries take conj(conj(c_h)) = c_h
            queries[qs] = scale_pairs(queries[qs], pairs, c.repeat_interleave(per_kv, 0))
        if plain.numel():
            merged, rotations = align_rotations(keys_l[hs][:, plain])
            layer.new_k[g, plain] = metric.to_rows(merged, kb)
            # keys_h ~ R_h^T merged: queries q -> R_h q
            queries[qs, plain] = rotations.repeat_interleave(per_kv, 0) @ queries[qs, plain]
        merged, rotations = align_rotations(values_l[hs])
        layer.new_v[g] = metric.to_rows(merged, vb)
        o[:, qs] = torch.einsum("oid,ied->oie", o[:, qs], rotations.repeat_interleave(per_kv, 0))
    return layer.result()
