"""Which head dims RoPE rotates together, and the complex view of key/query rows that goes with it.

RoPE turns each pair of dims (a, b) of a head by an angle that depends on the position. Read the
pair as one complex number z = x_a + i x_b: RoPE multiplies it by e^{i theta pos}. A complex scale
c commutes with that, so a head's keys may be scaled by c pairwise if the queries that read the
head are scaled by conj(c) on the same pair: Re(conj(q) c k) = Re(conj(conj(c) q) k). Dims RoPE
leaves alone ("plain": partial rotary, or no RoPE) admit any invertible map M on the keys, with
M^T on the queries.

transformers' rotate_half (Llama and most others) pairs dim j with j + r/2; some models (cohere,
helium, ernie) interleave, pairing 2j with 2j + 1. With partial rotary only the first r dims of a
head rotate. The architecture table says which style; r is read from the model (calibration).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RotaryPairs:
    real: torch.Tensor  # (P,) the dim holding each pair's real part
    imag: torch.Tensor  # (P,) the dim holding its imaginary part
    plain: torch.Tensor  # dims that RoPE does not rotate

    @property
    def count(self) -> int:
        return int(self.real.numel())


def rotary_pairs(style: str, rotary_dim: int, head_dim: int) -> RotaryPairs:
    """The pairs of a head of `head_dim` dims whose first `rotary_dim` dims RoPE rotates in `style`."""
    if style == "none":
        rotary_dim = 0
    if rotary_dim % 2 or not 0 <= rotary_dim <= head_dim:
        raise ValueError(f"rotary dims {rotary_dim} do not fit a head of {head_dim} dims")
    half = rotary_dim // 2
    if style in ("half", "none"):
        real, imag = torch.arange(half), torch.arange(half) + half
    elif style == "interleaved":
        real, imag = torch.arange(half) * 2, torch.arange(half) * 2 + 1
    else:
        raise ValueError(f"unknown RoPE style {style!r}")
    return RotaryPairs(real, imag, torch.arange(rotary_dim, head_dim))


def complex_rows(w: torch.Tensor, pairs: RotaryPairs) -> torch.Tensor:
    """(..., hd, n) real rows -> (..., P, n) complex rows, one per rotary pair."""
    return torch.complex(w[..., pairs.real, :], w[..., pairs.imag, :])


def with_complex_rows(w: torch.Tensor, pairs: RotaryPairs, z: torch.Tensor) -> torch.Tensor:
    """A copy of `w` whose rotary rows are replaced by the complex rows `z` (..., P, n)."""
    out = w.clone()
    out[..., pairs.real, :] = z.real.to(w.dtype)
    out[..., pairs.imag, :] = z.imag.to(w.dtype)
    return out


def scale_pairs(w: torch.Tensor, pairs: RotaryPairs, c: torch.Tensor) -> torch.Tensor:
    """Multiply each rotary pair of rows of `w` (..., hd, n) by the complex scale c (..., P)."""
    return with_complex_rows(w, pairs, complex_rows(w, pairs) * c.unsqueeze(-1))
