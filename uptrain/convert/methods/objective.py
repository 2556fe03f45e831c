"""The calibrated error of a converted layer against its source, from weights and S alone.

For query head i reading source KV head h and new KV head g (inputs x_m, x_n drawn independently
with second moment S):
- scores: E[(q_i(x_m) . k_h(x_n) - q'_i(x_m) . k'_g(x_n))^2]; on RoPE pairs averaged over the
  relative angle, which leaves |conj(q) k - conj(q') k'|^2 / 2 per pair (complex rows);
- values: E|O_i v_h(x) - O'_i v'_g(x)|^2, where x may be the inputs as the source's attention
  mixes them (what a value projection is applied to, in effect).
The fits minimize exactly these (fit.py), so they serve to rank groupings (similar.py) and to
report how much a method lost. They ignore the softmax: `refine` optimizes the real output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from uptrain.architectures import AttentionWeights
from uptrain.convert.methods.metric import CalibratedMetric, with_bias
from uptrain.convert.methods.rope import RotaryPairs, complex_rows


@dataclass(frozen=True)
class LayerError:
    key: float  # summed squared score error
    key_total: float  # the source's summed squared scores
    value: float
    value_total: float

    @property
    def relative(self) -> tuple[float, float]:
        return self.key / max(self.key_total, 1e-300), self.value / max(self.value_total, 1e-300)


def _rows(attn: AttentionWeights) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """q (H, hd, n+1), k and v (KV, hd, n+1) over x~ = [x; 1] (biases as a last column), and o."""
    q = with_bias(attn.q, attn.q_bias, True)
    k = with_bias(attn.k, attn.k_bias, True)
    v = with_bias(attn.v, attn.v_bias, True)
    return q, k, v, attn.o.double()


def _times(rows: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """rows S for a stack of rows (..., n): one matrix product (the only O(n^2) work per row)."""
    return (rows.reshape(-1, rows.shape[-1]) @ s).reshape(rows.shape)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-by-row a b^H for batched (complex) rows (..., n)."""
    return (a * b.conj()).sum(-1)


def layer_error(
    source: AttentionWeights,
    new: AttentionWeights,
    metric: CalibratedMetric,
    pairs: RotaryPairs,
    value_metric: CalibratedMetric | None = None,
) -> LayerError:
    """Scores on inputs with second moment `metric`, values on `value_metric` (default: the same;
    the calibrated methods pass the moments of the inputs as attention mixes them).

    Each distinct row is multiplied by S once (rows S, then inner products with other rows):
    a S b^T = (a S) . b, and each KV head's rows are indexed per query head only afterwards."""
    s = metric.gram(True)
    q, k, v, o = _rows(source)
    q2, k2, v2, o2 = _rows(new)
    src = torch.arange(q.shape[0]) // (q.shape[0] // k.shape[0])  # each query head's KV head
    dst = torch.arange(q2.shape[0]) // (q2.shape[0] // k2.shape[0])
    qs, q2s, ks, k2s = (_times(t, s) for t in (q, q2, k, k2))
    key = key_total = torch.zeros((), dtype=torch.float64)
    if pairs.count:
        zq, zk, zq2, zk2 = (complex_rows(t, pairs) for t in (q, k, q2, k2))
        zqs, zks, zq2s, zk2s = (complex_rows(t, pairs) for t in (qs, ks, q2s, k2s))
        aq, bk = _dot(zqs, zq).real, _dot(zks, zk).real[src]
        aq2, bk2 = _dot(zq2s, zq2).real, _dot(zk2s, zk2).real[dst]
        cross = (_dot(zqs, zq2).conj() * _dot(zks[src], zk2[dst])).real
        key_total = key_total + (aq * bk).sum() / 2
        key = key + (aq * bk + aq2 * bk2 - 2 * cross).sum() / 2
    if pairs.plain.numel():
        p = pairs.plain
        qq, kk = qs[:, p] @ q[:, p].mT, (ks[:, p] @ k[:, p].mT)[src]
        qq2, kk2 = q2s[:, p] @ q2[:, p].mT, (k2s[:, p] @ k2[:, p].mT)[dst]
        qx, kx = q2s[:, p] @ q[:, p].mT, ks[src][:, p] @ k2[dst][:, p].mT
        trace = lambda a, b: (a * b.mT).sum()  # noqa: E731 - tr(a b), batched and summed
        key_total = key_total + trace(qq, kk)
        key = key + trace(qq, kk) + trace(qq2, kk2) - 2 * trace(qx, kx)
    oo, oo2, ox = (torch.einsum("ohd,ohe->hde", a, b) for a, b in ((o, o), (o2, o2), (o, o2)))
    s = (value_metric or metric).gram(True)
    vs, v2s = _times(v, s), _times(v2, s)
    vv, vv2, vx = (vs @ v.mT)[src], (v2s @ v2.mT)[dst], v2s[dst] @ v[src].mT
    value_total = (oo * vv.mT).sum()
    value = value_total + (oo2 * vv2.mT).sum() - 2 * (ox * vx.mT).sum()
    return LayerError(float(key), float(key_total), float(value), float(value_total))
