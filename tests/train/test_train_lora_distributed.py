"""train.lora on two CPU processes (torchrun, gloo, DDP) trains like one process with the same global batch.

The two runs see the same blocks per step and average the same gradients; only the order of float32
sums differs (all-reduce vs one batch). Tolerances as in test_train_distributed.py (tolerances.py): the
losses within LOSS_RTOL, the adapters within weight_tolerance(lr, betas, steps), the merged weights
within merged_lora_tolerance of that.
"""

from __future__ import annotations

import pytest
import torch
from lora_checks import assert_merged_close
from safetensors.torch import load_file
from tolerances import LOSS_RTOL, weight_tolerance
from train_runs import losses, torchrun_subprocess, train_subprocess

RUN = ("budget.max_steps=6", "checkpoint.every_steps=3", "train.lora.rank=4", "optim.lr=1e-2")
LR, BETAS, STEPS = 1e-2, (0.9, 0.95), 6  # optim.lr above, the default optim.betas


@pytest.mark.slow
def test_lora_on_two_processes_matches_one(tmp_path):
    one = tmp_path / "one"
    single = train_subprocess(one, *RUN, "train.per_device_batch=4")
    assert single.returncode == 0, single.stderr

    two = tmp_path / "two"
    double = torchrun_subprocess(two, *RUN, "train.per_device_batch=2")
    assert double.returncode == 0, double.stderr[-3000:]

    expected, got = losses(one), losses(two)
    assert sorted(got) == sorted(expected) == list(range(1, 7))
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=LOSS_RTOL), step
    atol = weight_tolerance(LR, BETAS, STEPS)
    a_one, a_two = (load_file(r / "adapter" / "adapter_model.safetensors") for r in (one, two))
    assert a_one.keys() == a_two.keys()
    for name in a_one:
        torch.testing.assert_close(a_two[name], a_one[name], rtol=0, atol=atol)
    assert_merged_close(one, two, a_one, atol)
    # the checkpoint of the DDP run holds only what trains, under DDP's names
    saved = load_file(two / "checkpoints" / "step-00000003" / "model.safetensors")
    assert saved and all(".lora_" in k or ".modules_to_save." in k for k in saved), list(saved)
