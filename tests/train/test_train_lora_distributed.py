"""train.lora on two CPU processes (torchrun, gloo, DDP) trains like one process with the same global batch.

Tolerance as in test_train_distributed.py: the two runs see the same blocks per step and average the same
gradients; only the order of float32 sums differs (all-reduce vs one batch), which moves the 7th
significant digit of the losses and leaves the merged weights within 1e-5.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from train_runs import losses, torchrun_subprocess, train_subprocess

RUN = ("budget.max_steps=6", "checkpoint.every_steps=3", "train.lora.rank=4", "optim.lr=1e-2")


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
        assert got[step] == pytest.approx(expected[step], rel=1e-5), step
    final_one = load_file(one / "final" / "model.safetensors")
    final_two = load_file(two / "final" / "model.safetensors")
    assert final_one.keys() == final_two.keys()
    for name in final_one:
        torch.testing.assert_close(final_two[name], final_one[name], rtol=0, atol=1e-5)
    # the checkpoint of the DDP run holds only what trains, under DDP's names
    saved = load_file(two / "checkpoints" / "step-00000003" / "model.safetensors")
    assert saved and all(".lora_" in k or ".modules_to_save." in k for k in saved), list(saved)
