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


def layer_error(
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
