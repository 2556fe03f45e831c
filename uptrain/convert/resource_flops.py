"""The arithmetic of a calibrated conversion, per decoder layer, counted from its dimensions (what
`uptrain convert --plan` turns into time): the calibration forward pass over the calibration tokens,
the statistics the hooks accumulate, the merge's float64 math and refine's steps. Multiply-adds count
two FLOPs; only the matrix products and factorizations are counted (they dominate at these sizes).
"""

from __future__ import annotations

from dataclasses import dataclass

from uptrain.convert.calibration.stats import MIXED_STRIDE
from uptrain.convert.resource_shapes import Layout, ModelShape, PlanSettings


@dataclass(frozen=True)
class LayerFlops:
    """FLOPs of one decoder layer; `forward`, `statistics` and `refine` run on the calibration device
    in its compute dtype, `merge` on the CPU in float64."""

    forward: float
    statistics: float
    merge: float
    refine: float

    @property
    def total(self) -> float:
        return self.forward + self.statistics + self.merge + self.refine


def attention_width(shape: ModelShape) -> int:
    return shape.heads * shape.head_dim


def _attention_flops(shape: ModelShape, tokens: int, seq_len: int, params: int) -> float:
    """One attention module's forward over `tokens` tokens in sequences of `seq_len`: its projections
    (2 x parameters a token) and its scores and mix (2 x T x width each: eager computes all T x T)."""
    return tokens * (2.0 * params + 4.0 * seq_len * attention_width(shape))


def forward_flops(shape: ModelShape, settings: PlanSettings, layout: Layout) -> float:
    """The decoder layer run on every calibration token: 2 x its parameters a token plus attention's
    4 x T x width; sequential calibration runs the converted stream through it as well."""
    streams = 2 if settings.sequential else 1
    per_token = 2.0 * shape.layer_params + 4.0 * layout.seq_len * attention_width(shape)
    return streams * layout.tokens * per_token


def statistics_flops(shape: ModelShape, settings: PlanSettings, layout: Layout) -> float:
    """The hooks' moments a token: x^T x (2 h^2), the mixed inputs X^T (A^T A) X with A every
    MIXED_STRIDE-th query's probabilities of every head (2 H T^2 / stride + 2 T h + 2 h^2), and with
    sequential calibration the cross moment (2 h^2)."""
    h, t = shape.hidden, layout.seq_len
    per_token = 4.0 * h * h + 2.0 * shape.heads * t * t / MIXED_STRIDE + 2.0 * t * h
    if settings.sequential:
        per_token += 2.0 * h * h
    return layout.tokens * per_token


def merge_flops(shape: ModelShape, settings: PlanSettings) -> float:
    """The merge's float64 math on the CPU (metric.py, fit.py, aligned.py, similar.py, objective.py):
    Cholesky factors of the (h+1)^2 moments (h^3/3 each: fit factors the inputs' and the mixed
    inputs', aligned the inputs'), K and V rows into L-space (2 x 2 KV hd h^2), fit's query moments
    (2 H hd h^2), the shared rows back through L (about 3 G hd h^2), fit's value bases, the errors
    uptrain.json reports (4 (H + KV + G) hd h^2), sequential calibration's transfer of the q, k, v rows
    to the converted stream's inputs, and `similar`'s trial merge and error of every pair of KV heads."""
    if not settings.calibrated or settings.merge not in ("fit", "aligned"):
        return 0.0
    h, hd, heads, kv, g = shape.hidden + 1, shape.head_dim, shape.heads, shape.kv_heads, settings.groups
    fit = settings.merge == "fit"
    flops = (2 if fit else 1) * h**3 / 3.0 + 4.0 * kv * hd * h * h + 3.0 * g * hd * h * h
    if fit:
        flops += 2.0 * heads * hd * h * h + 2.0 * kv * kv * hd * hd * h / g
    flops += 4.0 * (heads + kv + g) * hd * h * h
    if settings.sequential:
        flops += 2.0 * h**3 / 3.0 + 4.0 * (heads + 2 * kv) * hd * h * h
    if settings.similar and 1 < g < kv:
        per_kv = heads // kv
        flops += kv * (kv - 1) / 2 * (23.0 + 12.0 * per_kv) * hd * h * h
    return flops


def refine_flops(shape: ModelShape, settings: PlanSettings, layout: Layout) -> float:
    """refine's steps: forward and backward (3 x the forward) of the converted attention on one replay
    batch each, plus three forward passes over every replayed token (the source's outputs, and the
    error before and after)."""
    if not settings.refine_steps and not layout.kept_tokens:
        return 0.0
    params = shape.converted_attention_params(settings.groups)
    step = 3.0 * _attention_flops(shape, layout.kept_batch_tokens, layout.seq_len, params)
    passes = 3.0 * _attention_flops(shape, layout.kept_tokens, layout.seq_len, params)
    return settings.refine_steps * step + passes


def layer_flops(shape: ModelShape, settings: PlanSettings, layout: Layout) -> LayerFlops:
    if not settings.calibrated:
        return LayerFlops(0.0, 0.0, 0.0, 0.0)
    return LayerFlops(
        forward=forward_flops(shape, settings, layout),
        statistics=statistics_flops(shape, settings, layout),
        merge=merge_flops(shape, settings),
        refine=refine_flops(shape, settings, layout) if settings.refines else 0.0,
    )
