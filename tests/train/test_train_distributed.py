"""Two CPU processes (torchrun, gloo) train like one process with the same global batch.

The two runs see the same blocks in each step (accelerate deals batch i to process i % 2) and average the
same gradients; only the order of float32 sums differs (all-reduce vs one batch). Tolerances, derived in
tests/helpers/tolerances.py: LOSS_RTOL on every loss (float32 summation over a step's tokens), and on the
final weights twice the sum of AdamW's largest possible steps, because AdamW normalises each update and so
can turn a last-bit gradient difference into a step of about lr (the old 1e-5 failed on another CPU at
1.99e-5).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from tolerances import LOSS_RTOL, weight_tolerance
from train_runs import losses, torchrun_subprocess, train_subprocess

RUN = ("budget.max_steps=10", "checkpoint.every_steps=5")


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    one = tmp_path / "one"
    single = train_subprocess(one, *RUN, "train.per_device_batch=4")
    assert single.returncode == 0, single.stderr

    two = tmp_path / "two"
    double = torchrun_subprocess(two, *RUN, "train.per_device_batch=2")
    assert double.returncode == 0, double.stderr[-3000:]
    assert "uptraining 5.1K tokens = 10 steps of 512 tokens" in double.stdout  # 2 x 2 x 2 x 64 per step
    assert double.stdout.count("saved ") == 1, "only the main process reports and writes"

    expected, got = losses(one), losses(two)
    assert sorted(got) == sorted(expected) == list(range(1, 11))
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=LOSS_RTOL), step
    evals = [{r["step"]: r["eval_loss"] for r in _records(d) if "eval_loss" in r} for d in (one, two)]
    assert evals[0].keys() == evals[1].keys() == {0, 10}
    for step in evals[0]:  # held-out blocks split over two processes, gathered back
        assert evals[1][step] == pytest.approx(evals[0][step], rel=LOSS_RTOL)
    final_one, final_two = (
        load_file(one / "final" / "model.safetensors"),
        load_file(two / "final" / "model.safetensors"),
    )
    assert final_one.keys() == final_two.keys()
    atol = weight_tolerance(3e-3, (0.9, 0.95), 10)  # tiny-cpu.yaml's optim.lr, default betas, 10 steps
    for name in final_one:
        torch.testing.assert_close(final_two[name], final_one[name], rtol=0, atol=atol)

    training = json.loads((two / "final" / "uptrain.json").read_text())["training"]
    assert training["processes"] == 2 and training["global_batch"] == 8
    # every process saved its RNG state into the same checkpoint directory
    assert sorted(p.name for p in (two / "checkpoints" / "step-00000005").glob("random_states_*")) == [
        "random_states_0.pkl",
        "random_states_1.pkl",
    ]
