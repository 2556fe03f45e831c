"""train.lora: peft adapters train and lower the loss; final/ is the merged model as plain weights whose
logits equal peft's unmerged model; checkpoints hold only what trains; K/V choices train what they say;
4-bit without bitsandbytes and a GPU is refused before anything is written."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli
from safetensors.torch import load_file
from train_runs import TINY, losses, reset_accelerate, sets, train_in_process

from uptrain.data import builtin_text

ADAPTED = tuple(f"{m}.weight" for m in ("q_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))
RUN = ("budget.max_steps=12", "checkpoint.every_steps=4", "optim.lr=1e-2", "train.lora.rank=4")


@pytest.fixture(autouse=True)
def clean_state():
    reset_accelerate()
    yield
    reset_accelerate()


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "run"
    reset_accelerate()
    result = train_in_process(out, *RUN)
    reset_accelerate()
    assert result.exit_code == 0, result.output
    return out


def _load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def _tokens(run, n=4, length=64):
    """n blocks of the training text (python-docs), tokenized by the test itself."""
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(run / "final")(builtin_text("python-docs")[:40_000])["input_ids"]
    start = 100 * length
    return torch.tensor(ids[start : start + n * length]).view(n, length)


def _loss(model, ids):
    with torch.no_grad():
        return model(ids, labels=ids).loss.item()


def test_lora_training_lowers_the_loss(lora_run):
    records = [json.loads(line) for line in (lora_run / "metrics.jsonl").read_text().splitlines()]
    evals = [r["eval_loss"] for r in records if "eval_loss" in r]
    assert evals[-1] < evals[0] - 0.05, evals  # held-out loss, before and after
    # and on text the test tokenizes itself, with plain transformers
    ids = _tokens(lora_run)
    assert _loss(_load(lora_run / "final"), ids) < _loss(_load(lora_run / "converted"), ids) - 0.05


def test_final_is_plain_weights_whose_logits_equal_the_unmerged_peft_model(lora_run):
    from peft import PeftModel

    final = lora_run / "final"
    assert not list(final.glob("adapter*")), "final/ holds no peft files"
    config = json.loads((final / "config.json").read_text())
    assert config["dtype"] == json.loads((lora_run / "converted" / "config.json").read_text())["dtype"]
    merged = _load(final)  # no peft, no trust_remote_code
    assert config["architectures"] == [type(merged).__name__]  # the class serving engines choose code by
    unmerged = PeftModel.from_pretrained(_load(lora_run / "converted"), lora_run / "adapter").eval()
    ids = _tokens(lora_run, n=2)
    with torch.no_grad():
        a, b = merged(ids).logits, unmerged(ids).logits
    # Merging replaces W x + s B (A x) by (W + s B A) x, the same sum in another order: float32 rounding
    # (~1e-7 relative per operation) through 2 layers, on logits of size ~5, stays far below 1e-4;
    # an adapter left out or applied twice moves them by ~1e-2 or more (asserted just below).
    torch.testing.assert_close(a, b, rtol=0, atol=1e-4)
    with torch.no_grad():
        base = _load(lora_run / "converted")(ids).logits
    assert (a - base).abs().max() > 1e-2


def test_what_trains_and_what_stays_frozen(lora_run):
    """Default kv: full -> k/v projections changed as whole matrices; q/o/MLP changed by rank-r updates;
    embeddings and norms exactly as converted."""
    before = load_file(lora_run / "converted" / "model.safetensors")
    after = load_file(lora_run / "final" / "model.safetensors")
    assert before.keys() == after.keys()
    for name, old in before.items():
        delta = after[name].float() - old.float()
        if name.endswith(("k_proj.weight", "v_proj.weight")):
            assert torch.linalg.matrix_rank(delta) > 4, name  # trained in full: not low-rank
        elif name.endswith(ADAPTED):
            assert 0 < torch.linalg.matrix_rank(delta) <= 4, name  # the rank-4 update
        elif "layers" in name or "embed" in name or "norm" in name:
            assert torch.equal(after[name], old), name


def test_checkpoints_hold_only_the_trained_state(lora_run):
    checkpoint = lora_run / "checkpoints" / "step-00000008"
    saved = load_file(checkpoint / "model.safetensors")
    assert saved and all(".lora_" in k or ".modules_to_save." in k for k in saved), list(saved)
    layers = 2  # configs/tiny-cpu.yaml; rank 4 adapters, hidden 64
    converted = load_file(lora_run / "converted" / "model.safetensors")
    kv = sum(v.numel() for k, v in converted.items() if "k_proj" in k)
    assert sum(v.numel() for k, v in saved.items() if "k_proj" in k) == kv  # K in full
    lora = [k for k in saved if ".lora_A." in k]
    assert len(lora) == 5 * layers  # q, o, gate, up, down: every linear but K/V and the head
    assert all(saved[k].shape[0] == 4 for k in lora)


def test_resume_with_another_lora_setting_is_refused(lora_run, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(lora_run, out)
    shutil.rmtree(out / "final")
    result = train_in_process(out, *RUN[:-1], "train.lora.rank=8", resume=True)
    assert_one_line_error(result, "config differs", "train.lora.rank")


@pytest.mark.parametrize("kv", ["frozen", "lora"])
def test_kv_frozen_or_lora(tmp_path, kv):
    """kv: frozen leaves the new K/V as converted (here under bf16 mixed precision); kv: lora changes
    them (here with gradient checkpointing and distillation from the conversion source)."""
    out = tmp_path / "run"
    extra = ("train.gradient_checkpointing=true", "distill.enabled=true") if kv == "lora" else ()
    precision = ("train.mixed_precision=bf16",) if kv == "frozen" else ()
    result = train_in_process(
        out, "budget.max_steps=2", "checkpoint.every_steps=0", f"train.lora.kv={kv}", *extra, *precision
    )
    assert result.exit_code == 0, result.output
    before = load_file(out / "converted" / "model.safetensors")
    after = load_file(out / "final" / "model.safetensors")
    for name in before:
        if name.endswith(("k_proj.weight", "v_proj.weight")):
            changed = not torch.equal(after[name], before[name])
            assert changed == (kv == "lora"), name
    assert sorted(losses(out)) == [1, 2]
    training = json.loads((out / "final" / "uptrain.json").read_text())["training"]
    assert training["mixed_precision"] == ("bf16" if precision else "no")
    assert training["lora"]["kv"] == kv
    if extra:
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert all(r["kl"] > 0 for r in records if "loss" in r)


def test_4bit_without_bitsandbytes_or_gpu_is_refused(tmp_path):
    missing = []
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append("bitsandbytes")
    if not torch.cuda.is_available():
        missing.append("a CUDA GPU")
    if not missing:
        pytest.skip("this machine has bitsandbytes and a GPU")
    out = tmp_path / "out"
    result = run_cli("train", "--config", TINY, "--output", out, *sets("train.lora.load_in_4bit=true"))
    assert_one_line_error(result, "train.lora.load_in_4bit", *missing)
    assert not out.exists()


def test_a_module_both_adapted_and_trained_in_full_is_refused_before_the_run_writes(tmp_path):
    out = tmp_path / "out"
    both = ("train.lora.target_modules=['*.o_proj']", "train.trainable=['*.o_proj.*']")
    result = train_in_process(out, "budget.max_steps=2", *both)
    assert_one_line_error(result, "self_attn.o_proj is both in train.trainable and adapted by train.lora")
    assert not (out / "config.yaml").exists() and not (out / "checkpoints").exists()
