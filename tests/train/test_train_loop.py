"""The training loop on configs/tiny-cpu.yaml, in-process: loss falls, the final checkpoint is an ordinary
one, distillation from an identical teacher starts at KL 0, NaN and a full disk stop cleanly."""

from __future__ import annotations

import errno
import json
import math

import pytest
import torch
from cli_helpers import assert_one_line_error
from train_runs import losses, reset_accelerate, train_in_process

import uptrain.train.steps as loop_module


@pytest.fixture(autouse=True)
def clean_state():
    reset_accelerate()
    yield
    reset_accelerate()


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_tiny_cpu_loss_falls_and_final_checkpoint_loads(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "run"
    result = train_in_process(out, "budget.max_steps=16", "checkpoint.every_steps=8")
    assert result.exit_code == 0, result.output
    assert "uptraining 8.2K tokens = 16 steps of 512 tokens" in result.output  # 4 x 2 x 1 x 64 per step

    per_step = losses(out)
    assert sorted(per_step) == list(range(1, 17))
    # a random 259-token model starts near ln(259) = 5.56; 16 steps at lr 3e-3 bring it well below
    assert per_step[1] > 5.0
    assert sum(per_step[i] for i in range(13, 17)) / 4 < per_step[1] - 1.0

    evals = [r for r in _records(out) if "eval_loss" in r]
    assert [r["step"] for r in evals] == [0, 16] and evals[1]["eval_loss"] < evals[0]["eval_loss"]

    final = out / "final"
    model = AutoModelForCausalLM.from_pretrained(final)
    assert model.config.num_key_value_heads == 2 and model.config.num_attention_heads == 8
    tokenizer = AutoTokenizer.from_pretrained(final)
    ids = tokenizer("def f(x): return x", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()
    converted = AutoModelForCausalLM.from_pretrained(out / "converted")
    name = "model.layers.0.self_attn.k_proj.weight"
    assert not torch.equal(model.state_dict()[name], converted.state_dict()[name])

    record = json.loads((final / "uptrain.json").read_text())
    training = record["training"]
    assert training["steps"] == 16 and training["tokens_seen"] == 16 * 4 * 2 * 64
    assert training["final_loss"] == pytest.approx(per_step[16])
    assert (
        record["conversion"]["groups"] == 2 and record["source"]["uptrain"]["built"]["kind"] == "tiny-llama"
    )
    assert (out / "config.yaml").read_text().count("max_steps: 16") == 1
    assert [p.name for p in sorted((out / "checkpoints").iterdir())] == ["step-00000008"]

    reset_accelerate()  # --resume on a finished run changes nothing
    written = (final / "model.safetensors").stat().st_mtime_ns
    again = train_in_process(out, "budget.max_steps=16", "checkpoint.every_steps=8", resume=True)
    assert again.exit_code == 0 and "nothing to do" in again.output
    assert (final / "model.safetensors").stat().st_mtime_ns == written


@pytest.mark.slow
def test_distillation_from_an_identical_teacher_starts_at_kl_zero(tmp_path):
    from uptrain.checkpoint.offline import TinyLlamaSpec, build_tiny_llama

    model = build_tiny_llama(tmp_path / "mha", TinyLlamaSpec(layers=1, hidden=32, heads=4, intermediate=64))
    out = tmp_path / "run"
    result = train_in_process(
        out,
        "model.tiny=null",
        "model.convert=null",
        f"model.path={model}",
        "distill.enabled=true",
        f"distill.teacher={model}",
        "distill.weight=0.25",
        "distill.temperature=2.0",
        "budget.max_steps=3",
    )
    assert result.exit_code == 0, result.output
    records = [r for r in _records(out) if "loss" in r]
    assert records[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # student == teacher before the first update
    assert records[-1]["kl"] > 1e-6  # and they part once the student trains
    for r in records:  # the logged loss is the stated mix
        assert r["loss"] == pytest.approx(0.75 * r["ce"] + 0.25 * r["kl"], rel=1e-5)
    assert (
        json.loads((out / "final" / "uptrain.json").read_text())["training"]["distill"]["temperature"] == 2.0
    )


@pytest.mark.slow
@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_nan_loss_stops_naming_the_step_and_the_last_good_checkpoint(tmp_path, monkeypatch, bad):
    real = loop_module.uptraining_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        parts = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 7:  # the first micro-batch of step 4 (2 per step)
            parts.loss = parts.loss * float(bad)
        return parts

    monkeypatch.setattr(loop_module, "uptraining_loss", poisoned)
    out = tmp_path / "run"
    result = train_in_process(out, "budget.max_steps=8", "checkpoint.every_steps=2")
    line = assert_one_line_error(result, f"loss became {bad} at step 4", "checkpoints/step-00000002")
    assert "--resume" in line
    assert not (out / "final").exists()
    assert (out / "checkpoints" / "step-00000002" / "trainer_state.json").is_file()
    assert max(losses(out)) == 3 and all(math.isfinite(v) for v in losses(out).values())


@pytest.mark.slow
def test_no_room_for_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    from accelerate import Accelerator

    real = Accelerator.save_state
    calls = {"n": 0}

    def full_disk(self, output_dir=None, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            real(self, output_dir, **kwargs)  # half written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, output_dir, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", full_disk)
    out = tmp_path / "run"
    result = train_in_process(out, "budget.max_steps=8", "checkpoint.every_steps=2")
    assert_one_line_error(result, "step-00000004", "no space left", "step-00000002 is intact", "--resume")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000002"]  # no temporary left
    state = json.loads((out / "checkpoints" / "step-00000002" / "trainer_state.json").read_text())
    assert state["step"] == 2 and state["micro_batches"] == 4

    # and the run resumes from it
    reset_accelerate()
    monkeypatch.setattr(Accelerator, "save_state", real)
    resumed = train_in_process(out, "budget.max_steps=8", "checkpoint.every_steps=2", resume=True)
    assert resumed.exit_code == 0, resumed.output
    assert "resumed from" in resumed.output and sorted(losses(out)) == list(range(1, 9))


@pytest.mark.slow
def test_gradient_checkpointing_and_tensorboard_leave_the_losses_unchanged(tmp_path):
    import importlib.util

    plain = train_in_process(tmp_path / "plain", "budget.max_steps=3")
    assert plain.exit_code == 0, plain.output
    reset_accelerate()
    out = tmp_path / "options"
    tensorboard = importlib.util.find_spec("tensorboard") is not None  # optional; not a dependency
    options = train_in_process(
        out, "budget.max_steps=3", "train.gradient_checkpointing=true", f"logging.tensorboard={tensorboard}"
    )
    assert options.exit_code == 0, options.output
    expected, got = losses(tmp_path / "plain"), losses(out)
    assert got.keys() == expected.keys()
    for step in expected:  # recomputing activations in backward changes nothing in float32
        assert got[step] == pytest.approx(expected[step], rel=1e-6)
    assert bool(list((out / "tensorboard").rglob("events.out.tfevents.*"))) == tensorboard
    record = [r for r in _records(out) if "loss" in r][-1]
    phases = [record[f"time_{p}_s"] for p in ("data", "forward", "backward", "optimizer", "other")]
    assert all(t >= 0 for t in phases) and record["time_backward_s"] > 0


@pytest.mark.slow
def test_the_budget_fraction_uses_pretraining_tokens_recorded_along_the_chain(tmp_path):
    from uptrain.checkpoint.offline import TinyLlamaSpec, build_tiny_llama
    from uptrain.checkpoint.provenance import read_provenance, write_provenance

    source = build_tiny_llama(
        tmp_path / "pretrained", TinyLlamaSpec(layers=1, hidden=32, heads=4, intermediate=64)
    )
    write_provenance(source, {**read_provenance(source), "pretraining_tokens": 1_000_000})
    out = tmp_path / "run"
    result = train_in_process(
        out,
        "model.tiny=null",
        f"model.convert.source={source}",
        "budget.max_tokens=null",
        "budget.fraction=0.003",
    )
    assert result.exit_code == 0, result.output
    # 0.3% of 1M = 3,000 tokens; 512 tokens per step -> 5 steps = 2,560 tokens
    assert (
        "uptraining 0.3% of 1.0M pre-training tokens = 3.0K tokens = 5 steps of 512 tokens" in result.output
    )
    assert "trained 5 steps = 2.6K tokens = 0.26% of the original pre-training" in result.output
    training = json.loads((out / "final" / "uptrain.json").read_text())["training"]
    assert training["pretraining_tokens"] == 1_000_000
    assert training["fraction_of_pretraining"] == pytest.approx(2560 / 1_000_000)
