"""FSDP2 on two CPU processes (gloo, configs/accelerate/fsdp2-cpu.yaml), launched as a user launches it:
the same losses and weights as one process with the same global batch, sharded checkpoints that a
SIGKILL and --resume continue exactly, one ordinary safetensors checkpoint at the end, and frozen
parameters, distillation, gradient checkpointing and bf16 under FSDP2. Tolerances: tolerances.py."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest
import torch
from safetensors.torch import load_file
from tolerances import LOSS_RTOL, weight_tolerance
from train_runs import launch_command, launch_subprocess, losses, quiet_env, train_subprocess

FSDP = "fsdp2-cpu.yaml"
RUN = ("budget.max_steps=10", "checkpoint.every_steps=5", "checkpoint.keep_last=3")
LR, BETAS = 3e-3, (0.9, 0.95)  # configs/tiny-cpu.yaml's optim.lr and the default optim.betas


def _evals(out) -> dict[int, float]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["eval_loss"] for r in map(json.loads, lines) if "eval_loss" in r}


@pytest.fixture(scope="module")
def one(tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "run"
    done = train_subprocess(out, *RUN, "train.per_device_batch=4")
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def fsdp(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp") / "run"
    done = launch_subprocess(out, FSDP, *RUN, "train.per_device_batch=2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "uptraining 5.1K tokens = 10 steps of 512 tokens" in done.stdout  # 2 x 2 x 2 x 64 per step
    return out


@pytest.mark.slow
def test_fsdp2_on_two_processes_matches_one_process(one, fsdp):
    expected, got = losses(one), losses(fsdp)
    assert sorted(got) == sorted(expected) == list(range(1, 11))
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=LOSS_RTOL), step
    evals = _evals(one), _evals(fsdp)
    assert evals[0].keys() == evals[1].keys() == {0, 10}
    for step in evals[0]:
        assert evals[1][step] == pytest.approx(evals[0][step], rel=LOSS_RTOL)

    final_one, final_two = (
        load_file(one / "final" / "model.safetensors"),
        load_file(fsdp / "final" / "model.safetensors"),
    )
    assert final_one.keys() == final_two.keys()
    atol = weight_tolerance(LR, BETAS, 10)
    for name in final_one:
        assert final_two[name].shape == final_one[name].shape
        torch.testing.assert_close(final_two[name], final_one[name], rtol=0, atol=atol)
    training = json.loads((fsdp / "final" / "uptrain.json").read_text())["training"]
    assert training["processes"] == 2 and training["global_batch"] == 8


@pytest.mark.slow
def test_fsdp2_checkpoints_are_sharded_and_the_final_save_is_one_ordinary_checkpoint(fsdp):
    from transformers import AutoModelForCausalLM

    step = fsdp / "checkpoints" / "step-00000005"
    for part in ("pytorch_model_fsdp_0", "optimizer_0"):  # torch.distributed.checkpoint, one file per rank
        assert sorted(p.name for p in (step / part).glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert not (step / "model.safetensors").exists(), "a DDP-style whole-model checkpoint: FSDP did not run"

    final = fsdp / "final"
    assert [p.name for p in final.glob("*.safetensors")] == ["model.safetensors"]
    saved = load_file(final / "model.safetensors")
    converted = load_file(fsdp / "converted" / "model.safetensors")
    assert {k: v.shape for k, v in saved.items()} == {
        k: v.shape for k, v in converted.items()
    }  # whole, not shards
    model = AutoModelForCausalLM.from_pretrained(final)
    assert model.config.num_key_value_heads == 2
    for name, param in model.state_dict().items():
        assert torch.equal(param, saved[name]), name
    ids = torch.arange(1, 33).unsqueeze(0)
    assert torch.isfinite(model(input_ids=ids).logits).all()


def _logged_step(out) -> int:
    metrics = out / "metrics.jsonl"
    if not metrics.exists():
        return 0
    lines = [line for line in metrics.read_text().splitlines() if line.endswith("}")]
    return max((json.loads(line).get("step", 0) for line in lines), default=0)


@pytest.mark.slow
def test_fsdp2_sigkill_then_resume_continues_exactly(fsdp, tmp_path):
    import time

    out = tmp_path / "killed"
    command = launch_command(out, FSDP, *RUN, "train.per_device_batch=2")
    process = subprocess.Popen(
        command,
        env=quiet_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 400
    while not ((out / "checkpoints" / "step-00000005").is_dir() and _logged_step(out) >= 6):
        assert process.poll() is None, (
            f"the run ended before it could be killed:\n{process.stderr.read()[-3000:]}"
        )
        assert time.monotonic() < deadline, "timed out waiting for the run"
        time.sleep(0.05)
    import psutil

    # the launcher and both ranks (torch's elastic agent starts them in sessions of their own), at once,
    # as a scheduler kills a job
    for victim in [*psutil.Process(process.pid).children(recursive=True), psutil.Process(process.pid)]:
        victim.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "final").exists(), "the run finished before it could be killed"

    resumed = launch_subprocess(out, FSDP, *RUN, "train.per_device_batch=2", resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "step 5" in resumed.stdout
    # the same two processes and the same sums in the same order: bit for bit
    assert losses(out) == losses(fsdp)
    assert _evals(out) == _evals(fsdp)
    final, reference = (
        load_file(out / "final" / "model.safetensors"),
        load_file(fsdp / "final" / "model.safetensors"),
    )
    assert all(torch.equal(final[k], reference[k]) for k in reference)


@pytest.mark.slow
def test_fsdp2_with_frozen_parameters_distillation_checkpointing_and_bf16(tmp_path):
    out = tmp_path / "run"
    settings = (
        "budget.max_steps=3",
        "train.per_device_batch=2",
        "train.trainable=['*.k_proj.*', '*.v_proj.*']",
        "distill.enabled=true",
        "train.gradient_checkpointing=true",
        "train.mixed_precision=bf16",
    )
    done = launch_subprocess(out, FSDP, *settings)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "training 4,096 of" in done.stdout  # 2 layers x (k and v) x (2 KV heads x 8 dims) x 64 wide
    before = load_file(out / "converted" / "model.safetensors")
    after = load_file(out / "final" / "model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {k for k in before if k.endswith(("k_proj.weight", "v_proj.weight"))}
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in records if "loss" in r]
    assert [r["step"] for r in trained] == [1, 2, 3]
    assert all(r["kl"] > 0 and r["ce"] > 0 for r in trained)  # the teacher ran: a KL term was logged
    assert all(torch.isfinite(torch.tensor([r["loss"], r["kl"], r["ce"]])).all() for r in trained)
    training = json.loads((out / "final" / "uptrain.json").read_text())["training"]
    assert training["processes"] == 2
