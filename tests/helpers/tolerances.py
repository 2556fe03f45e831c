"""How far two correct training runs that differ only in the order of float32 sums (one process against
several: all-reduce, sharded reductions) can end up apart, from the arithmetic of AdamW.

AdamW's update is lr * m_hat / (sqrt(v_hat) + eps): normalised, so a last-bit difference in a gradient
element whose moments sit near zero can move that weight by a whole step of about lr, in either
direction. No tolerance on the weights smaller than twice the sum of the largest possible steps holds
on every CPU; this is that sum.
"""

from __future__ import annotations

import math


def adam_step_bound(beta1: float, beta2: float, t: int) -> float:
    """max |m_hat_t| / sqrt(v_hat_t) over all gradient sequences (Cauchy-Schwarz on the two moving
    averages): (1-b1)/(1-b1^t) * sqrt(sum_{j<t} (b1^2/b2)^j) * sqrt((1-b2^t)/(1-b2)). It is 1 at t = 1."""
    ratio = sum((beta1 * beta1 / beta2) ** j for j in range(t))
    return (1 - beta1) / (1 - beta1**t) * math.sqrt(ratio) * math.sqrt((1 - beta2**t) / (1 - beta2))


def weight_tolerance(lr: float, betas: tuple[float, float], steps: int) -> float:
    """A bound on |w_a - w_b| for any element after `steps` AdamW steps from the same weights, with a
    schedule whose learning rate never exceeds `lr`: each run moves the element by at most
    lr * adam_step_bound(t) at step t (decoupled weight decay only shrinks a difference)."""
    return 2 * sum(lr * adam_step_bound(*betas, t) for t in range(1, steps + 1))


# Losses: every step's loss is a float32 mean over the step's tokens of log-softmax terms; with the same
# weights, another summation order changes it by at most n * u relative (n <= 512 terms per process and
# step here, u = 2^-24 ~ 6e-8: 3e-5). The weights themselves differ only where AdamW amplified rounding
# (elements whose first moment is at rounding level), and those move the loss by |dL/dw| * lr each, far
# below that. 1e-4 relative is three times the summation bound.
LOSS_RTOL = 1e-4


def merged_lora_tolerance(atol: float, scale: float, rank: int, max_a: float, max_b: float) -> float:
    """A bound on |W'_a - W'_b| for merged LoRA weights W' = W + scale * B @ A when every element of A
    and B differs by at most `atol` between the runs and |A| <= max_a, |B| <= max_b elementwise: each
    element of B @ A sums `rank` products, each moved by at most atol * max_a + max_b * atol + atol^2;
    weights trained in full (modules_to_save) differ by atol itself, hence the + atol."""
    return scale * rank * (atol * max_a + max_b * atol + atol * atol) + atol
