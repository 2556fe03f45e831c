"""The faster calibrated math (issue 24: rows times S once, keys and values taken to L-space once per
layer, real products instead of complex ones) gives what the old math gave, on small random layers
with biases, partial rotary (plain dims), GQA sources and both RoPE styles. The old math is kept
verbatim in tests/helpers/calibrated_reference.py.

Tolerances: the layers are float64 (so the comparison sees float64 rounding, not float32's), and both
sides evaluate the same float64 formulas in another association order, so they differ by rounding
only: at most about n * eps * cond (n = 49 inputs, eps = 2.2e-16, the moments' condition number up
to 5e5 here), i.e. 5e-9 relative, amplified by the eigen- and singular-vector steps by 1 / (relative
spectral gap), O(1) on random heads; observed: 4e-15. RTOL = 1e-8 is above that bound and far below
what any real change of the math moves the results by (order 1)."""

import pytest
import torch
from calibrated_reference import reference_aligned_layer, reference_fit_layer, reference_layer_error

from uptrain.architectures import AttentionDims, AttentionWeights, get_architecture
from uptrain.convert.calibration.stats import LayerCalibration
from uptrain.convert.methods.aligned import aligned_layer
from uptrain.convert.methods.base import MethodContext
from uptrain.convert.methods.fit import fit_layer
from uptrain.convert.methods.metric import CalibratedMetric
from uptrain.convert.methods.objective import layer_error
from uptrain.convert.methods.rope import rotary_pairs

RTOL = 1e-8  # rounding only: the bound argued in the module docstring
HIDDEN = 48


def moment(hidden: int, seed: int) -> torch.Tensor:
    """E[x~ x~^T] of 400 random correlated inputs with a mean, x~ = [x; 1] (positive definite)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(400, hidden, generator=g, dtype=torch.float64) @ torch.randn(
        hidden, hidden, generator=g, dtype=torch.float64
    ) / hidden**0.5 + torch.randn(hidden, generator=g, dtype=torch.float64)
    xt = torch.cat([x, torch.ones(400, 1, dtype=torch.float64)], 1)
    return xt.T @ xt / 400


def problem(heads: int, kv: int, hd: int, rotary: int, rope: str, bias: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64) / HIDDEN**0.5  # noqa: E731
    attn = AttentionWeights(
        q=rand(heads, hd, HIDDEN),
        k=rand(kv, hd, HIDDEN),
        v=rand(kv, hd, HIDDEN),
        o=rand(HIDDEN, heads, hd),
        q_bias=rand(heads, hd) if bias else None,
        k_bias=rand(kv, hd) if bias else None,
        v_bias=rand(kv, hd) if bias else None,
    )
    cal = LayerCalibration(
        second_moment=moment(HIDDEN, seed + 1),
        mixed_moment=moment(HIDDEN, seed + 2) * 0.5,
        tokens=400,
        rope=rope,
        rotary_dim=rotary,
        keys_normalized=False,
    )
    dims = AttentionDims(heads=heads, kv_heads=kv, head_dim=hd, hidden=HIDDEN, layers=1)
    return attn, MethodContext(arch=get_architecture("llama"), dims=dims, layer=0, calibration=cal)


def close(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    a, b = a.double(), b.double()
    return float((a - b).norm()) <= RTOL * float(b.norm()) + 1e-30


CASES = [  # heads, kv heads, head dim, rotary dims, RoPE style, biases
    (8, 8, 8, 8, "half", False),
    (8, 4, 8, 4, "half", True),  # GQA source, partial rotary, biases
    (6, 6, 6, 6, "interleaved", True),
    (8, 8, 6, 0, "none", False),  # no RoPE: every dim plain
]


PLAIN_FIT = {"query_aware": False, "output_aware": False, "mixed_values": False}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("options", [{}, PLAIN_FIT])
def test_fit_gives_what_the_old_math_gave(case, groups, options):
    *shape, bias = case
    attn, ctx = problem(*shape, bias)
    if attn.kv_heads % groups:
        pytest.skip("groups must divide the KV heads")
    new = fit_layer(attn, groups, ctx, **options)
    ctx.calibration.cache.clear()
    old = reference_fit_layer(attn, groups, ctx, **options)
    for name in ("q", "k", "v", "o", "q_bias", "k_bias", "v_bias"):
        assert close(getattr(new, name), getattr(old, name)), name


@pytest.mark.parametrize("case", CASES)
def test_layer_error_gives_what_the_old_math_gave(case):
    *shape, bias = case
    heads, kv, hd, rotary, rope = shape
    attn, ctx = problem(*shape, bias)
    cal = ctx.calibration
    metric, mixed = CalibratedMetric(cal.second_moment), CalibratedMetric(cal.mixed_moment)
    pairs = rotary_pairs(rope, rotary, hd)
    for groups in (1, 2, kv):
        converted = fit_layer(attn, groups, ctx)
        new = layer_error(attn, converted, metric, pairs, mixed)
        old = reference_layer_error(attn, converted, metric, pairs, mixed)
        # at G = KV the errors cancel to rounding: compare them on the scale of the totals
        assert abs(new.key - old.key) <= RTOL * old.key_total
        assert abs(new.value - old.value) <= RTOL * old.value_total
        assert abs(new.key_total - old.key_total) <= RTOL * old.key_total
        assert abs(new.value_total - old.value_total) <= RTOL * old.value_total


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("groups", [1, 2])
def test_aligned_gives_what_the_old_math_gave(case, groups):
    *shape, bias = case
    attn, ctx = problem(*shape, bias)
    if attn.kv_heads % groups:
        pytest.skip("groups must divide the KV heads")
    new = aligned_layer(attn, groups, ctx)
    ctx.calibration.cache.clear()
    old = reference_aligned_layer(attn, groups, ctx)
    for name in ("q", "k", "v", "o", "q_bias", "k_bias", "v_bias"):
        assert close(getattr(new, name), getattr(old, name)), name


@pytest.mark.parametrize("merge", [fit_layer, aligned_layer])
def test_merges_leave_the_callers_weights_alone(merge):
    """float64 weights are not copied on the way in (with_bias), so a merge that rewrote its queries in
    place would change the caller's: it must not."""
    attn, ctx = problem(8, 8, 8, 8, "half", False)
    before = {name: getattr(attn, name).clone() for name in ("q", "k", "v", "o")}
    merge(attn, 2, ctx)
    assert all(torch.equal(getattr(attn, name), t) for name, t in before.items())
