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
from uptrain.convert.methods.rope import RotaryPairs


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
    """rows S for a stack of rows (..., n): one matrix product, the only n^2 work per row."""
    return (rows.reshape(-1, rows.shape[-1]) @ s).reshape(rows.shape)


def _pair_products(m: torch.Tensor, pairs: RotaryPairs) -> torch.Tensor:
    """z_a S z_b^H per RoPE pair (..., P), complex, from m = a S b^T (..., hd, hd) of real rows
    whose pairs are z = rows[real] + i rows[imag] (rope.complex_rows)."""
    r, i = pairs.real, pairs.imag
    return torch.complex(m[..., r, r] + m[..., i, i], m[..., i, r] - m[..., r, i])


def layer_error(
    source: AttentionWeights,
    new: AttentionWeights,
    metric: CalibratedMetric,
    pairs: RotaryPairs,
    value_metric: CalibratedMetric | None = None,
) -> LayerError:
    """Scores on inputs with second moment `metric`, values on `value_metric` (default: the same;
    the calibrated methods pass the moments of the inputs as attention mixes them).

    Everything is read off per-head Gram matrices a S b^T (hd x hd): each distinct row is multiplied
    by S once, and each KV head's Gram matrices are indexed per query head only afterwards. Query
    head i reads source KV head i // (H/KV) and new KV head i // (H/G), so all the query heads of
    source KV head h read new KV head h // (KV/G)."""
    s = metric.gram(True)
    q, k, v, o = _rows(source)
    q2, k2, v2, o2 = _rows(new)
    kv_heads, groups = k.shape[0], k2.shape[0]
    src = torch.arange(q.shape[0]) // (q.shape[0] // kv_heads)  # each query head's KV head
    dst = torch.arange(q2.shape[0]) // (q2.shape[0] // groups)
    to_new = torch.arange(kv_heads) // (kv_heads // groups)  # each source KV head's new KV head
    qs, q2s, ks, k2s = (_times(t, s) for t in (q, q2, k, k2))
    qq, qq2, q2q2 = qs @ q.mT, qs @ q2.mT, q2s @ q2.mT  # a S b^T per query head (H, hd, hd)
    kk, kk2, k2k2 = (ks @ k.mT)[src], (ks @ k2[to_new].mT)[src], (k2s @ k2.mT)[dst]
    del qs, q2s, ks, k2s
    key = key_total = torch.zeros((), dtype=torch.float64)
    if pairs.count:
        aq, bk = _pair_products(qq, pairs).real, _pair_products(kk, pairs).real
        aq2, bk2 = _pair_products(q2q2, pairs).real, _pair_products(k2k2, pairs).real
        cross = (_pair_products(qq2, pairs).conj() * _pair_products(kk2, pairs)).real
        key_total = key_total + (aq * bk).sum() / 2
        key = key + (aq * bk + aq2 * bk2 - 2 * cross).sum() / 2
    if pairs.plain.numel():
        p = pairs.plain[:, None], pairs.plain
        block = lambda m: m[:, p[0], p[1]]  # noqa: E731 - the plain dims' block of each head's Gram
        trace = lambda a, b: (block(a) * block(b).mT).sum()  # noqa: E731 - tr(a b), batched and summed
        # q2 S q^T is qq2^T, k S k2^T is kk2
        key_total = key_total + trace(qq, kk)
        key = key + trace(qq, kk) + trace(q2q2, k2k2) - 2 * trace(qq2.mT, kk2)
    oo, oo2, ox = (torch.einsum("ohd,ohe->hde", a, b) for a, b in ((o, o), (o2, o2), (o, o2)))
    s = (value_metric or metric).gram(True)
    vs, v2s = _times(v, s), _times(v2, s)
    vv, vv2, vx = (vs @ v.mT)[src], (v2s @ v2.mT)[dst], (v2s[to_new] @ v.mT)[src]
    value_total = (oo * vv.mT).sum()
    value = value_total + (oo2 * vv2.mT).sum() - 2 * (ox * vx.mT).sum()
    return LayerError(float(key), float(key_total), float(value), float(value_total))
