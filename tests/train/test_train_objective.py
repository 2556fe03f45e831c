"""The objective against explicit computations: cross-entropy on shifted tokens, and the distillation KL."""

from __future__ import annotations

import math

import pytest
import torch

from uptrain.train.objective import distillation_kl, uptraining_loss


def _explicit_kl(student, teacher, temperature):
    """sum_v p_t(v) (log p_t(v) - log p_s(v)), averaged over positions, times T^2, with plain loops."""
    total, count = 0.0, 0
    rows = zip(student.reshape(-1, student.shape[-1]), teacher.reshape(-1, teacher.shape[-1]), strict=True)
    for s_row, t_row in rows:
        zs = [math.exp(x / temperature) for x in s_row.tolist()]
        zt = [math.exp(x / temperature) for x in t_row.tolist()]
        ps = [z / sum(zs) for z in zs]
        pt = [z / sum(zt) for z in zt]
        total += sum(q * (math.log(q) - math.log(p)) for q, p in zip(pt, ps, strict=True))
        count += 1
    return total / count * temperature**2


@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.5])
def test_kl_matches_an_explicit_computation(temperature):
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 3, 7, generator=g), torch.randn(2, 3, 7, generator=g)
    got = distillation_kl(student, teacher, temperature).item()
    assert got == pytest.approx(_explicit_kl(student, teacher, temperature), rel=1e-5)


def test_kl_of_identical_logits_is_zero():
    logits = torch.randn(2, 5, 11) * 4
    assert distillation_kl(logits, logits.clone(), 2.0).item() == pytest.approx(0.0, abs=1e-7)


def test_loss_is_next_token_cross_entropy_and_the_stated_mix(tmp_path):
    from uptrain.checkpoint.loading import load_causal_lm
    from uptrain.checkpoint.offline import TinyLlamaSpec, build_tiny_llama

    path = build_tiny_llama(tmp_path / "m", TinyLlamaSpec(layers=1, hidden=32, heads=4, intermediate=64))
    student = load_causal_lm(path).train()
    teacher = load_causal_lm(path)
    with torch.no_grad():  # a different teacher: perturb one weight
        teacher.lm_head.weight.mul_(1.5)
    ids = torch.randint(3, 259, (2, 12), generator=torch.Generator().manual_seed(1))

    logits = student(input_ids=ids).logits
    by_hand = -torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).mean()
    plain = uptraining_loss(student, ids)
    assert plain.loss.item() == pytest.approx(by_hand.item(), rel=1e-5) and plain.kl is None

    mixed = uptraining_loss(student, ids, teacher, weight=0.3, temperature=2.0)
    t_logits = teacher(input_ids=ids).logits
    kl = _explicit_kl(logits[:, :-1].detach(), t_logits[:, :-1].detach(), 2.0)
    assert mixed.kl.item() == pytest.approx(kl, rel=1e-4)
    assert mixed.loss.item() == pytest.approx(0.7 * by_hand.item() + 0.3 * kl, rel=1e-4)
    mixed.loss.backward()
    assert teacher.lm_head.weight.grad is None  # the teacher is frozen
    assert student.lm_head.weight.grad is not None
