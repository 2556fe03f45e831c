"""Budget arithmetic against hand computation."""

from __future__ import annotations

import pytest

from uptrain.config import DataSection, TrainSection, UptrainConfig
from uptrain.errors import UptrainError
from uptrain.train.budget import describe_achieved, describe_budget, plan_budget
from uptrain.units import format_tokens, parse_tokens


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2T", 2_000_000_000_000),
        ("100B", 100_000_000_000),
        ("1.5M", 1_500_000),
        ("400k", 400_000),
        ("100_000", 100_000),
        ("2e6", 2_000_000),
        (2.0e12, 2_000_000_000_000),
        (12345, 12345),
    ],
)
def test_parse_tokens(text, expected):
    assert parse_tokens(text) == expected


@pytest.mark.parametrize("bad", ["2Q", "-5", "1.5", "lots", True, float("inf"), 0.5])
def test_parse_tokens_rejects(bad):
    with pytest.raises(ValueError):
        parse_tokens(bad)


def tokens_per_step(per_device_batch: int, grad_accum: int, processes: int, seq_len: int) -> int:
    train = TrainSection(per_device_batch=per_device_batch, grad_accum=grad_accum)
    return UptrainConfig(data=DataSection(seq_len=seq_len), train=train).tokens_per_step(processes)


def test_tokens_per_step_is_the_global_batch_times_seq_len():
    # 4 blocks per device x 8 accumulation x 16 processes = 512 blocks of 2048 tokens
    assert TrainSection(per_device_batch=4, grad_accum=8).global_batch(16) == 512
    assert tokens_per_step(4, 8, 16, 2048) == 512 * 2048 == 1_048_576


def test_five_percent_of_two_trillion_tokens():
    # 1000 sequences of 4096 tokens per step: 4,096,000 tokens; 5% of 2T = 100e9 tokens
    per_step = tokens_per_step(per_device_batch=5, grad_accum=25, processes=8, seq_len=4096)
    assert per_step == 4_096_000
    budget = plan_budget(per_step, pretraining_tokens=2 * 10**12, fraction=0.05)
    assert budget.steps == 24_414  # floor(100e9 / 4.096e6) = floor(24414.06)
    assert budget.tokens == 24_414 * 4_096_000 == 99_999_744_000
    assert budget.fraction_of_pretraining == pytest.approx(99_999_744_000 / 2e12)
    assert describe_budget(budget) == (
        "uptraining 5.0% of 2.0T pre-training tokens = 100B tokens = 24,414 steps of 4.1M tokens"
    )


def test_explicit_budgets_take_precedence():
    by_tokens = plan_budget(1000, pretraining_tokens=10**9, fraction=0.05, max_tokens=12_345)
    assert (by_tokens.steps, by_tokens.tokens) == (12, 12_000)  # rounded down to whole steps
    assert (
        describe_budget(by_tokens)
        == "uptraining 12K tokens = 12 steps of 1.0K tokens = 0.0012% of 1.0B pre-training tokens"
    )
    by_steps = plan_budget(1000, pretraining_tokens=10**9, max_tokens=12_345, max_steps=7)
    assert (by_steps.steps, by_steps.tokens) == (7, 7000)


def test_achieved_fraction():
    assert describe_achieved(24_414, 99_999_744_000, 2 * 10**12) == (
        "trained 24,414 steps = 100B tokens = 5.0% of the original pre-training"
    )
    assert describe_achieved(3, 3000, None) == "trained 3 steps = 3.0K tokens"


@pytest.mark.parametrize(
    "kwargs",
    [{"max_tokens": 999}, {"pretraining_tokens": 10_000, "fraction": 0.05}],  # 999 < 1000; 500 < 1000
)
def test_a_budget_of_zero_steps_is_an_error(kwargs):
    with pytest.raises(UptrainError, match="0 optimizer steps"):
        plan_budget(1000, **kwargs)


def test_no_budget_at_all_is_an_error():
    with pytest.raises(UptrainError, match="budget.pretraining_tokens"):
        plan_budget(1000)


def test_format_tokens():
    assert [format_tokens(n) for n in (512, 8192, 97_280, 4_096_000, 10**11, 2 * 10**12)] == [
        "512",
        "8.2K",
        "97.3K",
        "4.1M",
        "100B",
        "2.0T",
    ]
