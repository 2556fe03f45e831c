"""Calibration-weighted linear algebra on one layer's heads (float64 throughout).

A projection row w acts on the attention input x; what matters is its output on real inputs,
E[(w x)^2] = w S w^T with S = E[x x^T] over the calibration tokens. Factor S = L L^T: then w L is
the row in a space where the plain Euclidean norm is that expected output energy, and the best
fits there are SVDs. Biases ride along as one more input that is always 1 (x~ = [x; 1]).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from uptrain.architectures import AttentionWeights
from uptrain.convert.methods.base import MethodContext
from uptrain.convert.methods.rope import RotaryPairs, rotary_pairs
from uptrain.errors import SettingError
from uptrain.threads import torch_threads

DAMPING = 1e-6  # relative ridge added to S before factoring, for inputs the calibration never excited
TRANSFER_RIDGE = 1e-2  # relative ridge of the sequential transfer, toward the source's rows


@dataclass
class CalibratedMetric:
    """E[x~ x~^T] of a layer's attention input x~ = [x; 1] (the last row/column is for biases)."""

    second_moment: torch.Tensor  # (in + 1, in + 1)
    _factors: dict[bool, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def inputs(self) -> int:
        return self.second_moment.shape[0] - 1

    def gram(self, bias: bool) -> torch.Tensor:
        """S over x~ (with the bias input) or over x alone."""
        s = self.second_moment.double()
        return s if bias else s[:-1, :-1]

    def factor(self, bias: bool) -> torch.Tensor:
        """Lower-triangular L with L L^T = S + damping * mean(diag S) * I. The damping starts at
        DAMPING and grows tenfold while S (rank-deficient on little or repetitive calibration text,
        and accumulated in float32) is not numerically positive definite."""
        if bias not in self._factors:
            s = self.gram(bias)
            s = (s + s.T) / 2
            scale = s.diagonal().mean().clamp_min(1e-30)
            eye = torch.eye(s.shape[0], dtype=s.dtype)
            for step in range(7):
                factor, info = torch.linalg.cholesky_ex(s + DAMPING * 10**step * scale * eye)
                if int(info) == 0:
                    break
            else:
                raise SettingError(
                    "the calibration inputs are degenerate (their covariance cannot be factored); "
                    "give more or more varied <calibration_data>"
                )
            self._factors[bias] = factor
        return self._factors[bias]

    def to_rows(self, z: torch.Tensor, bias: bool) -> torch.Tensor:
        """Rows in L-space (..., n) back to weight rows: solve w L = z."""
        lower = self.factor(bias)
        lower = lower.to(z.dtype) if z.is_complex() else lower
        flat = z.reshape(-1, z.shape[-1])
        w = torch.linalg.solve_triangular(lower.mT, flat.mT, upper=True).mT
        return w.reshape(z.shape)


def with_bias(w: torch.Tensor, bias: torch.Tensor | None, keep: bool) -> torch.Tensor:
    """(N, hd, in) weights and (N, hd) bias -> (N, hd, in + 1) rows over x~ when `keep`, else w.
    A missing bias counts as zeros."""
    w = w.double()
    if not keep:
        return w
    b = torch.zeros(w.shape[:-1], dtype=w.dtype) if bias is None else bias.double()
    return torch.cat([w, b.unsqueeze(-1)], dim=-1)


def split_bias(rows: torch.Tensor, has_bias: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The inverse of with_bias(..., keep=has_bias)."""
    if not has_bias:
        return rows, None
    return rows[..., :-1], rows[..., -1]


def output_energy(rows: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
    """E[(w x)^2] for every row w of `rows` (..., n) under S = gram (n, n)."""
    return torch.einsum("...i,ij,...j->...", rows, gram, rows)


def small_eigh(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.linalg.eigh on one thread, for the small symmetric matrices of a group (head_dim or
    heads x head_dim rows). LAPACK's threaded eigensolver spends more time synchronizing its threads
    than computing on matrices this size, far more on a busy machine: 0.06 s on one thread against
    2-4.6 s on two for a 512 and four 128 eigendecompositions on a loaded 2-core EPYC (issue 24)."""
    with torch_threads(1):
        return torch.linalg.eigh(m)


def small_svd(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """torch.linalg.svd on one thread, for small (batched) matrices: see small_eigh."""
    with torch_threads(1):
        return torch.linalg.svd(m)


def shared_basis(blocks: torch.Tensor, rank: int) -> torch.Tensor:
    """The `rank` orthonormal rows spanning most of the stacked rows of `blocks` (r, m, n): the
    top right singular vectors of the (r*m, n) stack (through its small Gram matrix when that is
    well conditioned, else an SVD)."""
    stack = blocks.reshape(-1, blocks.shape[-1])
    if stack.shape[0] < stack.shape[1]:
        values, vectors = small_eigh(stack @ stack.mT)
        values, vectors = values.flip(0)[:rank], vectors.flip(1)[:, :rank]
        if values[-1] > 1e-10 * values[0] > 0:
            return (vectors.mT @ stack) / values.sqrt().unsqueeze(1)
    _, _, vh = torch.linalg.svd(stack, full_matrices=False)
    return vh[:rank]


def sqrtm_psd(m: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a positive semi-definite matrix (batched)."""
    values, vectors = small_eigh(m)
    return (vectors * values.clamp_min(0).sqrt().unsqueeze(-2)) @ vectors.mT


@dataclass(frozen=True)
class LayerSetup:
    """What the calibrated methods need about one layer, checked once."""

    metric: CalibratedMetric  # of the attention inputs x
    mixed: CalibratedMetric  # of the inputs as queries mix them, xbar = sum_t a_t x_t (values see these)
    pairs: RotaryPairs
    heads_per_kv: int  # query heads that read each source KV head
    cross: torch.Tensor | None = None  # sequential calibration: E[x~_src x~^T] (source input, these)

    def rows(self, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """A projection's rows over x~ (with its bias as the last column when it has one), transferred
        to these inputs."""
        return self.transfer(with_bias(w, bias, bias is not None), bias is not None)

    def transfer(self, rows: torch.Tensor, bias: bool) -> torch.Tensor:
        """Rows meant for the source's inputs x -> rows for these inputs x~ (sequential calibration;
        the rows themselves otherwise): the least-squares W' = argmin E|W' x~ - W x|^2 + lam |W' - W|^2,
        i.e. W (E[x x~^T] + lam I) (E[x~ x~^T] + lam I)^-1. The ridge pulls W' toward W on inputs the
        calibration never excited (without it those directions of W would be zeroed) and makes the
        map the identity when x~ = x."""
        if self.cross is None:
            return rows
        cross = self.cross.double() if bias else self.cross.double()[:-1, :-1]
        gram = self.metric.gram(bias)
        ridge = TRANSFER_RIDGE * gram.diagonal().mean().clamp_min(1e-30)
        eye = torch.eye(gram.shape[0], dtype=gram.dtype)
        flat = (rows @ (cross + ridge * eye)).reshape(-1, rows.shape[-1])
        solved = torch.linalg.solve(gram + ridge * eye, flat.mT).mT  # gram is symmetric
        return solved.reshape(rows.shape)


def calibrated_setup(attn: AttentionWeights, ctx: MethodContext, method: str) -> LayerSetup:
    """The layer's calibration metric and RoPE pairs, or a one-line error saying why `method`
    cannot convert this model."""
    cal = ctx.calibration
    if cal is None:
        raise SettingError(
            f"<method> {method} needs calibration text; pass <calibration_data> FILE_OR_HUB_ID"
        )
    if cal.keys_normalized:
        raise SettingError(
            f"<method> {method} assumes keys are linear in the input, but {ctx.arch.model_type} normalizes "
            "keys after k_proj (qk_norm); use <method> mean+refine"
        )
    if attn.kv_extras:
        raise SettingError(f"<method> {method} cannot fold per-KV-head norms; use <method> mean+refine")
    pairs = rotary_pairs(cal.rope, cal.rotary_dim, attn.k.shape[1])
    if "metrics" not in cal.cache:  # factored once per layer, whatever runs on it
        metric = CalibratedMetric(cal.second_moment)
        mixed = metric if cal.mixed_moment is None else CalibratedMetric(cal.mixed_moment)
        cal.cache["metrics"] = (metric, mixed)
    metric, mixed = cal.cache["metrics"]
    return LayerSetup(metric, mixed, pairs, attn.heads // attn.kv_heads, cal.cross_moment)
