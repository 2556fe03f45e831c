"""Interrupted runs: SIGKILL then --resume reproduces the uninterrupted run step for step; SIGTERM or SIGINT
(Ctrl-C) saves a checkpoint and exits cleanly. Real subprocesses, as a user's job would be killed."""

from __future__ import annotations

import json
import signal

import pytest
import torch
from safetensors.torch import load_file
from train_runs import kill_mid_run, logged_step, losses, start_training, train_subprocess, wait_for

RUN = ("budget.max_steps=24", "checkpoint.every_steps=4", "checkpoint.keep_last=2")


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_same_losses_as_an_uninterrupted_run(tmp_path):
    reference = tmp_path / "reference"
    done = train_subprocess(reference, *RUN)
    assert done.returncode == 0, done.stderr
    expected = losses(reference)
    assert sorted(expected) == list(range(1, 25))

    out = tmp_path / "killed"
    killed_at = kill_mid_run(out, *RUN)

    resumed = train_subprocess(out, *RUN, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout
    got = losses(out)
    assert sorted(got) == list(range(1, 25))  # records after the checkpoint were replaced, not duplicated
    assert got == expected, f"killed after step {killed_at}"  # bit for bit: same batches, same state

    final, ref = (
        load_file(out / "final" / "model.safetensors"),
        load_file(reference / "final" / "model.safetensors"),
    )
    assert all(torch.equal(final[k], ref[k]) for k in ref)
    assert not list((out / "checkpoints").glob(".*")), "no partial checkpoint is left behind"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_or_sigint_saves_a_checkpoint_and_exits_cleanly(tmp_path, sig):
    out = tmp_path / "run"
    assignments = ("budget.max_steps=400", "checkpoint.every_steps=0")
    process = start_training(out, *assignments)
    wait_for(lambda: logged_step(out) >= 3, process)
    process.send_signal(sig)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "interrupted at step" in errors[0] and "--resume" in errors[0], err
    assert "Traceback" not in err
    step = int(errors[0].split("interrupted at step ")[1].split(";")[0])
    saved = out / "checkpoints" / f"step-{step:08d}"
    state = json.loads((saved / "trainer_state.json").read_text())
    assert state["step"] == step and state["micro_batches"] == 2 * step
    assert logged_step(out) == step  # it stopped after the step it had logged
    assert not (out / "final").exists()
