"""The uptraining budget: pure arithmetic on tokens and steps.

The GQA paper uptrains for a fraction alpha (0.05) of the original pre-training. Tokens are the
measure of compute here: budget = pretraining_tokens x fraction, unless max_tokens or max_steps is
given. One optimizer step consumes global_batch x seq_len tokens (UptrainConfig.tokens_per_step,
the one place that multiplies them out); the step count is rounded down, so the budget is never
exceeded.
"""

from __future__ import annotations

from dataclasses import dataclass

from uptrain.errors import UptrainError
from uptrain.units import format_percent, format_tokens


@dataclass(frozen=True)
class Budget:
    steps: int
    tokens_per_step: int
    tokens: int  # what the steps consume: steps x tokens_per_step
    requested_tokens: int | None  # before rounding down to whole steps (None: set by max_steps)
    pretraining_tokens: int | None
    fraction: float | None  # the requested fraction of pre-training, when it set the budget

    @property
    def fraction_of_pretraining(self) -> float | None:
        return self.tokens / self.pretraining_tokens if self.pretraining_tokens else None


def plan_budget(
    tokens_per_step: int,
    pretraining_tokens: int | None = None,
    fraction: float = 0.05,
    max_tokens: int | None = None,
    max_steps: int | None = None,
) -> Budget:
    """Steps and tokens from whichever budget is given: max_steps, then max_tokens, then the fraction."""
    if tokens_per_step <= 0:
        raise UptrainError("the global batch holds no tokens; check train.per_device_batch and data.seq_len")
    if max_steps is not None:
        steps, requested, used_fraction = max_steps, None, None
    elif max_tokens is not None:
        steps, requested, used_fraction = max_tokens // tokens_per_step, max_tokens, None
    elif pretraining_tokens:
        requested = int(pretraining_tokens * fraction)
        steps, used_fraction = requested // tokens_per_step, fraction
    else:
        raise UptrainError(
            "the budget needs the source's pre-training tokens; set budget.pretraining_tokens "
            "(or record it in the source's uptrain.json), budget.max_tokens or budget.max_steps"
        )
    if steps <= 0:
        what = f"{requested:,} tokens" if requested is not None else f"max_steps {max_steps}"
        raise UptrainError(
            f"the budget of {what} gives 0 optimizer steps at {tokens_per_step:,} tokens per step; "
            "raise budget.fraction, budget.max_tokens or budget.max_steps, or shrink the batch"
        )
    return Budget(
        steps, tokens_per_step, steps * tokens_per_step, requested, pretraining_tokens, used_fraction
    )


def describe_budget(budget: Budget, doing: str = "uptraining") -> str:
    """E.g. "uptraining 5.0% of 2.0T pre-training tokens = 100B tokens = 24,414 steps"."""
    steps = f"{budget.steps:,} steps of {format_tokens(budget.tokens_per_step)} tokens"
    if budget.fraction is not None and budget.pretraining_tokens:
        return (
            f"{doing} {format_percent(budget.fraction)} of {format_tokens(budget.pretraining_tokens)} "
            f"pre-training tokens = {format_tokens(budget.requested_tokens or 0)} tokens = {steps}"
        )
    text = f"{doing} {format_tokens(budget.tokens)} tokens = {steps}"
    if budget.fraction_of_pretraining is not None:
        text += (
            f" = {format_percent(budget.fraction_of_pretraining)} of "
            f"{format_tokens(budget.pretraining_tokens or 0)} pre-training tokens"
        )
    return text


def describe_achieved(steps: int, tokens: int, pretraining_tokens: int | None) -> str:
    """E.g. "trained 24,414 steps = 100B tokens = 5.0% of the original pre-training"."""
    text = f"trained {steps:,} steps = {format_tokens(tokens)} tokens"
    if pretraining_tokens:
        text += f" = {format_percent(tokens / pretraining_tokens)} of the original pre-training"
    return text
