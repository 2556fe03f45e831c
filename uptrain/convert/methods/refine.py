"""`refine`: a short layer-by-layer reconstruction after a closed-form start.

The layer's converted attention module (built by transformers' own class, attention_modules.py)
is trained to reproduce the source layer's attention output on the calibration inputs kept for
replay: loss = |out_new - out_source|^2 / |out_source|^2, Adam with a cosine decay, one replay
batch a step in turn (the calibration pass cuts the kept inputs into batches of
refine_batch_tokens). The new K/V and the queries they were folded into move; the output
projection moves only with train_output (pipeline.py: always after a merge other than fit).

The defaults (100 steps of 512 tokens out of 4,096, lr 3e-3) come from layer-by-layer
measurements on SmolLM2 3 -> 1 (docs/RESULTS.md): the replayed tokens are few for a layer's
weights, so more tokens in smaller steps generalize better than more steps on one batch (steps of
1,024 tokens gained 2.5 perplexity for twice the time), and the
full o_proj (hidden^2 weights) fits the replayed tokens rather than the layer (hence kept after
fit, unless train_output). With precision "bf16" the steps run under bf16 autocast (weights, the
optimizer and the errors stay fp32); the errors before and after, and the choice between them,
are computed in fp32. Everything runs on the device the calibration pass ran the source on (where
its replayed inputs are): a GPU with `--device`.

Only one layer's modules and inputs are in play at a time. With sequential calibration
(sequential.py) the student sees the partly converted model's inputs and the teacher the
source's own, so a layer also makes up for what the layers below it lost; without it both see
the source's.
"""

from __future__ import annotations

import contextlib
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


def trained_parameters(module: torch.nn.Module, fixed: dict, output: str, train_output: bool) -> list:
    """The parameters refine moves: those conversion writes (not in `fixed`), less the output
    projection `output` (the table's o name) unless `train_output`."""
    prefix = output + "."
    return [
        p
        for name, p in module.named_parameters()
        if name not in fixed and (train_output or not name.startswith(prefix))
    ]


def refine_attention(
    source: AttentionWeights,
    start: AttentionWeights,
    ctx: MethodContext,
    steps: int,
    lr: float,
    train_output: bool = False,
    precision: str = "fp32",
) -> RefineResult:
    """Train `start` (G KV heads) to match `source` on the layer's replayed calibration inputs.
    Each step takes one replay batch in turn; the weights with the lowest error on all of them,
    among the start and the end, are kept (with one batch: the best seen). precision "bf16" runs
    the steps under bf16 autocast."""
    cal = ctx.calibration
    if cal is None or cal.modules is None or not cal.replay:
        raise SettingError("<method> refine needs calibration text; pass <calibration_data> FILE_OR_HUB_ID")
    modules, replay = cal.modules, cal.replay
    teacher = modules.build(source)
    with torch.no_grad():
        targets = [
            teacher(
                hidden_states=b.hidden_states if b.teacher_hidden is None else b.teacher_hidden, **b.kwargs
            )[0]
            for b in replay
        ]
    del teacher
    energy = float(sum(t.pow(2).sum() for t in targets)) or 1.0
    student = modules.build(start)
    for p in student.parameters():
        p.requires_grad_(False)
    trained = trained_parameters(student, modules.fixed, modules.arch.o, train_output)
    optimizer = torch.optim.Adam([p.requires_grad_(True) for p in trained], lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / max(steps, 1)))
    )
    full = len(replay) == 1  # then each step's loss is the error on all replayed tokens
    best, best_state = math.inf, {k: v.clone() for k, v in student.state_dict().items()}
    if not full or not steps:
        with torch.no_grad():
            best = float(_relative_error(student, replay, targets, energy))
    before = best
    device_type = replay[0].hidden_states.device.type  # where calibration ran the source
    autocast = (
        torch.autocast(device_type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    )
    for step in range(steps):
        i = step % len(replay)
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = _relative_error(student, replay[i : i + 1], targets[i : i + 1], energy)
        loss.backward()
        if full and step == 0:
            before = loss.item()  # the start's error, from the first step: no extra pass
        if full and loss.item() < best:  # the loss of the weights before this step
            best, best_state = loss.item(), {k: v.detach().clone() for k, v in student.state_dict().items()}
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        after = float(_relative_error(student, replay, targets, energy))
    if after > best:
        student.load_state_dict(best_state)
        after = best
    weights = modules.weights(student, start.kv_heads)
    return RefineResult(weights.to(start.k.dtype), before, after)
