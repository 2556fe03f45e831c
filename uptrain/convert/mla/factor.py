"""The linear algebra of one MLA layer (float64, pure functions).

- `latent_factor`: [K_nope; V] (all KV heads' rows over the attention input) ~ B A with A the R
  latent rows. `svd` takes the plain SVD of the weights (MHA2MLA's joint SVD); `care` takes it in
  the metric of the calibration inputs (CARE): the SVD of M L with S = E[x x^T] = L L^T, so that
  E|(M - B A) x|^2, the error on real inputs, is what rank R minimizes.
- `linear_norm_scale`: kv_a_layernorm (RMSNorm, eps) always applies. With the latent scaled by a so
  that mean(c^2) <= tol * eps for every possible input, it is linear to within a relative tol / 2:
  y = w c / sqrt(mean(c^2) + eps) = (w a / sqrt(eps)) A x (1 + O(tol)); its weight sqrt(eps) / a
  scales the latent back.
"""

from __future__ import annotations

import math

import torch

from uptrain.convert.methods.metric import CalibratedMetric

LINEAR_TOLERANCE = 1e-8  # bound on mean(c^2) / eps: the norm deviates from linear by <= 5e-9 relative


def latent_factor(
    rows: torch.Tensor, rank: int, metric: CalibratedMetric | None, row_weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(B, A, error): rows (N, in) ~ B (N, R) @ A (R, in), best in the metric's norm (plain Frobenius
    without one), the rows first weighted by `row_weights` (N, N) when given (A is then the best for
    the weighted rows, and B the least squares for that A); error is the relative squared error in
    that norm."""
    rows = rows.double()
    lifted = rows if metric is None else rows @ metric.factor(False)
    weighted = lifted if row_weights is None else row_weights.double() @ lifted
    u, s, vh = torch.linalg.svd(weighted, full_matrices=False)
    rank_kept = min(rank, s.numel())
    basis = vh[:rank_kept]
    b = u[:, :rank_kept] * s[:rank_kept] if row_weights is None else lifted @ basis.T
    a = basis if metric is None else metric.to_rows(basis, False)
    if rank_kept < rank:  # more latent dims than the rows have: the rest stay zero
        b = torch.cat([b, b.new_zeros(b.shape[0], rank - rank_kept)], 1)
        a = torch.cat([a, a.new_zeros(rank - rank_kept, a.shape[1])], 0)
    error = float(s[rank_kept:].pow(2).sum() / s.pow(2).sum().clamp_min(1e-300))
    return b, a, error


def linear_norm_scale(latent: torch.Tensor, input_norm: torch.Tensor, eps: float) -> float:
    """The scale a of the latent rows A (R, in) that keeps mean((a A x)^2) <= LINEAR_TOLERANCE * eps
    for every attention input x. x = g * h / rms(h) (the layer's input RMSNorm, weight g), so
    |x|^2 <= max(g^2) * in, and |A x|^2 <= |A|_2^2 |x|^2."""
    spectral = float(torch.linalg.matrix_norm(latent.double(), ord=2))
    bound = spectral**2 * float(input_norm.double().pow(2).max()) * latent.shape[1] / latent.shape[0]
    return math.sqrt(LINEAR_TOLERANCE * eps / max(bound, 1e-300))
