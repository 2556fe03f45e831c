"""Which of the source's RoPE frequency pairs MLA keeps, and the rotary settings that hold them.

A Llama head of hd dims rotates pair j (dims j and j + hd/2) at frequency base^(-2j/hd),
j = 0 .. hd/2 - 1. DeepseekV3's rotary embedding (one for the whole model) rotates the D dims of
q_pe/k_pe as D/2 pairs at base'^(-2i/D), divided by `factor` when rope_type is linear. So it holds
exactly the evenly spaced sets {s, s + k, ..., s + k (D/2 - 1)} of source pairs:
base' = base^(k D / hd) and factor = base^(2 s / hd) (plain default RoPE when s = 0).

A pair that loses its rotation becomes position-free (k_nope/q_nope). Its score term
Re(conj(q) k e^{-i theta d}) at query-key distance d >= 0 is then best replaced, in least squares
over the distances the source's attention actually spans (measured in calibration, weighted by the
attention probabilities), by Re(conj(c q) k) with c = E[e^{i theta d}]: the query pair is scaled by c
(`mean_rotations`). A slow pair (c ~ 1) loses almost nothing; a fast one (c ~ 0) averages out.

The kept set is the candidate whose pairs would cost most to drop: pair j of query head h reading
KV head g costs about E|q_hj|^2 E|k_gj|^2 (1 - |c_j|^2) (the scores' squared error left after the
best constant; with E|w x|^2 = w S w^T on the calibration inputs' second moment S). Each layer's
costs are normalized to sum 1 and summed over layers. MHA2MLA's criterion, sqrt(E|q|^2 E|k|^2)
alone, ignores that a slow pair barely rotates, and so keeps the slowest pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PairSet:
    """Source pairs s, s + k, ..., s + k (count - 1), as DeepseekV3's rotary embedding holds them."""

    start: int  # s
    step: int  # k
    count: int  # D / 2

    @property
    def pairs(self) -> list[int]:
        return [self.start + self.step * i for i in range(self.count)]

    def rope_parameters(self, base: float, head_dim: int) -> dict:
        """DeepseekV3's `rope_parameters` that rotate q_pe/k_pe pair i as the source rotates pair
        start + step * i."""
        theta = float(base) ** (self.step * 2 * self.count / head_dim)
        if self.start == 0:
            return {"rope_type": "default", "rope_theta": theta}
        factor = float(base) ** (2 * self.start / head_dim)
        return {"rope_type": "linear", "rope_theta": theta, "factor": factor}

    def describe(self) -> str:
        if self.count == 1:
            return f"pair {self.start}"
        if self.step == 1:
            return f"pairs {self.start}..{self.pairs[-1]} (contiguous)"
        return f"every {self.step}th pair from {self.start} to {self.pairs[-1]}"


def candidate_sets(head_dim: int, rope_dim: int) -> list[PairSet]:
    """Every evenly spaced set of rope_dim / 2 of the head's hd / 2 pairs."""
    total, count = head_dim // 2, rope_dim // 2
    if count == 1:
        return [PairSet(s, 1, 1) for s in range(total)]
    found = []
    for step in range(1, (total - 1) // (count - 1) + 1):
        for start in range(total - step * (count - 1)):
            found.append(PairSet(start, step, count))
    return found


def pair_energies(rows: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
    """E|w_j x|^2 summed over each pair's two rows: rows (N, hd, in) in rotate_half order, gram
    (in, in) -> (N, hd/2)."""
    energy = torch.einsum("ndi,ij,ndj->nd", rows.double(), gram.double(), rows.double())
    half = rows.shape[1] // 2
    return energy[:, :half] + energy[:, half:]


def mean_rotations(distances: torch.Tensor | None, base: float, head_dim: int) -> torch.Tensor:
    """c_j = E[e^{i theta_j d}] for every source pair j (hd/2,) complex, over the query-key distances d
    weighted by `distances` (attention mass at d = 0, 1, ...); zeros where none were measured."""
    theta = float(base) ** (-2 * torch.arange(head_dim // 2, dtype=torch.float64) / head_dim)
    if distances is None or float(distances.sum()) <= 0:
        return torch.zeros(head_dim // 2, dtype=torch.complex128)
    weights = distances.double() / distances.double().sum()
    angle = theta.unsqueeze(1) * torch.arange(weights.numel(), dtype=torch.float64)
    return (weights * torch.polar(torch.ones_like(angle), angle)).sum(1)


def pair_scores(
    q: torch.Tensor, k: torch.Tensor, gram: torch.Tensor, rotations: torch.Tensor
) -> torch.Tensor:
    """One layer's cost of dropping each pair's rotation (hd/2,), normalized to sum 1: sum over query
    heads h of E|q_hj|^2 E|k_g(h)j|^2 (1 - |c_j|^2). q: (H, hd, in), k: (KV, hd, in)."""
    per_kv = q.shape[0] // k.shape[0]
    eq = pair_energies(q, gram)
    ek = pair_energies(k, gram).repeat_interleave(per_kv, 0)
    scores = (eq * ek).sum(0) * (1 - rotations.abs().pow(2)).clamp_min(0)
    return scores / scores.sum().clamp_min(1e-300)


def choose_pairs(scores: torch.Tensor, rope_dim: int) -> tuple[PairSet, float]:
    """The candidate set with the largest total score (summed over layers: scores (layers, hd/2)),
    and the share of the total it keeps."""
    total = scores.double().sum(0)
    head_dim = 2 * total.numel()
    best, kept = None, -1.0
    for candidate in candidate_sets(head_dim, rope_dim):
        value = float(total[candidate.pairs].sum())
        if value > kept + 1e-12:
            best, kept = candidate, value
    assert best is not None
    return best, kept / float(total.sum().clamp_min(1e-300))
