"""train.lora after SIGKILL: --resume from a trainable-only checkpoint reproduces the uninterrupted run
step for step, and the merged final/ bit for bit. Real subprocesses, as a user's job would be killed."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from train_runs import kill_mid_run, losses, train_subprocess

# dropout on: the resumed run must also restore the RNG that draws the adapters' dropout masks
RUN = (
    "budget.max_steps=16",
    "checkpoint.every_steps=4",
    "train.lora.rank=4",
    "train.lora.dropout=0.1",
    "train.trainable=['*.o_proj.*']",
)


@pytest.mark.slow
def test_lora_sigkill_then_resume_gives_the_same_run(tmp_path):
    reference = tmp_path / "reference"
    done = train_subprocess(reference, *RUN)
    assert done.returncode == 0, done.stderr
    expected = losses(reference)
    assert sorted(expected) == list(range(1, 17))

    out = tmp_path / "killed"
    killed_at = kill_mid_run(out, *RUN)

    resumed = train_subprocess(out, *RUN, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout
    got = losses(out)
    assert got == expected, f"killed after step {killed_at}"  # bit for bit: same batches, same state

    final = load_file(out / "final" / "model.safetensors")
    ref = load_file(reference / "final" / "model.safetensors")
    assert final.keys() == ref.keys() and all(torch.equal(final[k], ref[k]) for k in ref)
    adapter = load_file(out / "adapter" / "adapter_model.safetensors")
    ref_adapter = load_file(reference / "adapter" / "adapter_model.safetensors")
    assert all(torch.equal(adapter[k], ref_adapter[k]) for k in ref_adapter)
    # o_proj (train.trainable) and k/v (train.lora.kv: full) trained in full: in the adapter whole
    assert any("o_proj" in k and "lora" not in k for k in adapter), list(adapter)
