"""`refine`: a short layer-by-layer reconstruction after a closed-form start.

The layer's converted attention module (built by transformers' own class, attention_modules.py)
is trained to reproduce the source layer's attention output on the calibration inputs kept for
replay: loss = |out_new - out_source|^2 / |out_source|^2, full batch, Adam with a cosine decay.
All the layer's attention parameters move (the new K/V and the Q/O they were folded into). Only
one layer's modules and inputs are in play at a time. With sequential calibration (the default,
sequential.py) the student sees the partly converted model's inputs and the teacher the source's
own, so a layer also makes up for what the layers below it lost; without it both see the source's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from uptrain.architectures import AttentionWeights
from uptrain.convert.methods.base import MethodContext
from uptrain.errors import SettingError


@dataclass(frozen=True)
class RefineResult:
    weights: AttentionWeights
    error_before: float  # relative squared error of the attention output on the replayed inputs
    error_after: float


def _relative_error(module: torch.nn.Module, replay: list, targets: list, energy: float) -> torch.Tensor:
    total = torch.zeros(())
    for batch, target in zip(replay, targets, strict=True):
        out = module(hidden_states=batch.hidden_states, **batch.kwargs)[0]
        total = total + (out - target).pow(2).sum() / energy
    return total


def refine_attention(
    source: AttentionWeights, start: AttentionWeights, ctx: MethodContext, steps: int, lr: float
) -> RefineResult:
    """Train `start` (G KV heads) to match `source` on the layer's replayed calibration inputs."""
    cal = ctx.calibration
    if cal is None or cal.modules is None or not cal.replay:
        raise SettingError("<method> refine needs calibration text; pass <calibration_data> FILE_OR_HUB_ID")
    modules = cal.modules
    teacher = modules.build(source)
    with torch.no_grad():
        targets = [
            teacher(
                hidden_states=b.hidden_states if b.teacher_hidden is None else b.teacher_hidden, **b.kwargs
            )[0]
            for b in cal.replay
        ]
    del teacher
    energy = float(sum(t.pow(2).sum() for t in targets)) or 1.0
    student = modules.build(start)
    for p in student.parameters():
        p.requires_grad_(False)
    params = [p.requires_grad_(True) for p in modules.trainable(student)]
    optimizer = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / max(steps, 1)))
    )
    with torch.no_grad():
        before = float(_relative_error(student, cal.replay, targets, energy))
    best, best_state = before, {k: v.clone() for k, v in student.state_dict().items()}
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = _relative_error(student, cal.replay, targets, energy)
        loss.backward()
        if loss.item() < best:  # the loss of the weights before this step
            best, best_state = loss.item(), {k: v.detach().clone() for k, v in student.state_dict().items()}
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        after = float(_relative_error(student, cal.replay, targets, energy))
    if after > best:
        student.load_state_dict(best_state)
        after = best
    weights = modules.weights(student, start.kv_heads)
    return RefineResult(weights.to(start.k.dtype), before, after)
