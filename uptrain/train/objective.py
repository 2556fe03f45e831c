"""The uptraining objective: next-token cross-entropy, as in the GQA paper, optionally mixed with
knowledge distillation from a frozen teacher (KL between temperature-softened distributions).

    loss = (1 - w) * CE + w * T^2 * KL(teacher_T || student_T)

Both terms are means over the predicted positions (every position but the last of each block).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass
class LossParts:
    loss: torch.Tensor  # what backward() sees
    ce: torch.Tensor  # next-token cross-entropy (detached when distilling)
    kl: torch.Tensor | None = None  # T^2-scaled KL to the teacher, when distilling


def distillation_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T^2 x mean over positions of KL(softmax(teacher/T) || softmax(student/T)), in float32."""
    vocab = min(student_logits.shape[-1], teacher_logits.shape[-1])  # padded vocabularies
    s = F.log_softmax(student_logits[..., :vocab].float().flatten(0, -2) / temperature, dim=-1)
    t = F.log_softmax(teacher_logits[..., :vocab].float().flatten(0, -2) / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2


def uptraining_loss(
    model: Any,
    input_ids: torch.Tensor,
    teacher: Any | None = None,
    weight: float = 0.0,
    temperature: float = 1.0,
) -> LossParts:
    """The loss of one micro-batch of packed blocks (no padding, so no attention mask)."""
    out = model(input_ids=input_ids, labels=input_ids)
    if teacher is None:
        return LossParts(out.loss, out.loss.detach())
    with torch.no_grad():
        teacher_logits = teacher(input_ids=input_ids).logits
    kl = distillation_kl(out.logits[:, :-1], teacher_logits[:, :-1], temperature)
    loss = (1 - weight) * out.loss + weight * kl
    return LossParts(loss, out.loss.detach(), kl.detach())


def objective_name(distill: Any | None) -> str:
    """How uptrain.json (and the model card) names the objective."""
    if distill is None:
        return "next-token cross-entropy"
    return (
        f"{1 - distill.weight:g} x cross-entropy + {distill.weight:g} x KL to the teacher "
        f"(temperature {distill.temperature:g})"
    )
