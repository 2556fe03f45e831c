"""`uptrain plan` against hand computations for a Llama-2-7B-shaped config converted to GQA-8, and its
activation estimate against what autograd really keeps on CPU for a small model."""

from __future__ import annotations

import json

import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli

from uptrain.pipeline.planning import model_shape
from uptrain.train.plan import Parallelism, Settings, activation_bytes

# Llama-2-7b-hf's config.json (the numbers that matter); uptrain plan reads nothing else.
LLAMA2_7B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 4096,
    "vocab_size": 32000,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}
GIB = 2**30

# By hand, for GQA-8 (8 KV heads of 128): per layer q, o 4096 x 4096; k, v 4096 x 1024; the MLP 3 x 4096 x
# 11008; two norms of 4096. Outside the layers: embeddings and head 32000 x 4096 each, the final norm.
LAYER = 2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 11008 + 2 * 4096
ROOT = 2 * 32000 * 4096 + 4096
N = 32 * LAYER + ROOT
TOKENS = 4 * 4096  # configs/llama2-7b-gqa8-fsdp.yaml: per_device_batch 4 x seq_len 4096


@pytest.fixture
def llama2(tmp_path):
    directory = tmp_path / "llama-2-7b"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(LLAMA2_7B))
    return directory


def _plan(llama2, *args):
    from train_runs import ROOT as CHECKOUT

    config = CHECKOUT / "configs" / "llama2-7b-gqa8-fsdp.yaml"
    return run_cli("plan", "--config", config, "--set", f"model.convert.source={llama2}", "--json", *args)


def test_llama2_7b_gqa8_on_8_gpus_with_fsdp2_matches_the_hand_computation(llama2):
    from train_runs import ROOT as CHECKOUT

    fsdp = CHECKOUT / "configs" / "accelerate" / "fsdp.yaml"
    result = _plan(llama2, "--accelerate-config", fsdp, "--device-memory", "80GB")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert N == 5_933_109_248  # 6,738,415,616 for MHA less 32 x 2 x 4096 x 3072 for the smaller k and v
    assert plan["model"]["params"] == N and plan["model"]["layer_params"] == LAYER
    assert plan["parallelism"]["processes"] == 8 and plan["parallelism"]["strategy"] == "fsdp"
    memory = plan["memory"]
    # fp32 master weights, gradients and AdamW's two states, each sharded 8 ways
    assert memory["weights"] == N * 4 // 8 == memory["gradients"]
    assert memory["optimizer"] == 2 * N * 4 // 8
    # bf16 all-gathers: the root unit, two layers' parameters and one layer's gradients
    assert memory["gathered"] == (ROOT + 2 * LAYER) * 2 + LAYER * 2
    # activations in bf16 (FSDP2 mixed precision): per token and layer, two norms of (4 + 2 + 2) x 4096
    # bytes, and 2 bytes x (q 4096 + attention output 4096 + k, v 2 x 1024 + MLP 4 x 11008); plus the
    # fp32 log-sum-exp (4 bytes x 32 heads x 4096 positions x batch 4)
    layer = TOKENS * (2 * 8 * 4096 + 2 * (2 * 4096 + 2 * 1024 + 4 * 11008)) + 4 * 4 * 32 * 4096
    head = TOKENS * 8 * 4096 + TOKENS * 32000 * (2 + 4)  # final norm, bf16 logits, fp32 log-softmax
    assert memory["activations_without"] == 32 * layer + head
    checkpointed = 32 * TOKENS * 4096 * 2 + layer + head  # each layer's bf16 input, one layer recomputed
    assert memory["activations_with"] == checkpointed == memory["activations"]  # the config checkpoints
    total = 2 * N * 4 // 8 + 2 * N * 4 // 8 + (ROOT + 3 * LAYER) * 2 + checkpointed
    assert memory["total"] == total
    assert 22 * GIB < total < 23 * GIB  # about 22.6 GiB of an 80 GB GPU
    assert plan["fits"] is True and plan["device_memory"] == 80 * 10**9
    compute = plan["compute"]
    assert compute["tokens_per_step"] == 8 * 4 * 32 * 4096
    assert compute["steps"] == 100 * 10**9 // (8 * 4 * 32 * 4096) == 23_841  # 5% of 2T tokens
    assert compute["flops"] == pytest.approx(6 * N * compute["steps"] * compute["tokens_per_step"], rel=1e-12)


def test_llama2_7b_on_one_80gb_gpu_does_not_fit_and_says_what_would(llama2):
    result = _plan(llama2, "--device-memory", "80GB")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    memory = plan["memory"]
    assert memory["weights"] == N * 4 and memory["optimizer"] == 2 * N * 4  # nothing sharded
    assert memory["total"] > 80 * 10**9  # 16 bytes per parameter alone are 95 GB
    assert plan["fits"] is False
    assert any("FSDP2" in advice and "GPUs" in advice for advice in plan["advice"]), plan["advice"]

    text = run_cli("plan", *_plan_args(llama2), "--device-memory", "80GB")
    assert text.exit_code == 0, text.output
    assert "does NOT fit" in text.output and "to fit: " in text.output


def _plan_args(llama2):
    from train_runs import ROOT as CHECKOUT

    return [
        "--config",
        CHECKOUT / "configs" / "llama2-7b-gqa8-fsdp.yaml",
        "--set",
        f"model.convert.source={llama2}",
    ]


def test_gradient_checkpointing_is_the_advice_when_activations_are_what_does_not_fit(llama2):
    from train_runs import ROOT as CHECKOUT

    fsdp = CHECKOUT / "configs" / "accelerate" / "fsdp.yaml"
    result = _plan(
        llama2,
        "--accelerate-config",
        fsdp,
        "--device-memory",
        "80GB",
        "--set",
        "train.gradient_checkpointing=false",
    )
    plan = json.loads(result.output)
    assert plan["fits"] is False  # ~104 GiB of activations without checkpointing
    assert "set train.gradient_checkpointing=true" in plan["advice"]


def test_plan_mistakes_are_one_line_errors(llama2, tmp_path):
    assert_one_line_error(
        run_cli("plan", *_plan_args(llama2), "--device-memory", "lots"), "--device-memory", "80GB"
    )
    missing = tmp_path / "nope.yaml"
    assert_one_line_error(
        run_cli("plan", *_plan_args(llama2), "--accelerate-config", missing), "does not exist"
    )


def _saved_bytes(model: torch.nn.Module, ids: torch.Tensor, autocast: bool = False) -> int:
    """What autograd keeps for backward after one forward pass (distinct storages, parameters excluded),
    plus the logits the output holds: the activation memory the plan estimates."""
    import contextlib

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), context:
        out = model(input_ids=ids, labels=ids)
    kept[out.logits.untyped_storage().data_ptr()] = out.logits.untyped_storage().nbytes()
    return sum(n for ptr, n in kept.items() if ptr not in params)


SMALL = {
    "model_type": "llama",
    "vocab_size": 512,
    "hidden_size": 128,
    "intermediate_size": 352,
    "num_hidden_layers": 3,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "tie_word_embeddings": False,
}


@pytest.mark.parametrize("regime", ["fp32", "bf16", "autocast"])
def test_the_activation_estimate_matches_what_autograd_keeps_on_cpu(regime):
    """Tolerance 1%: the estimate leaves out tensors of b x s elements (the norms' rsqrt, int64 labels)
    and RoPE's cos and sin, together 0.5% of the total here (b x s x 4 bytes per norm against >= 9 x b x
    s x h x 2 bytes per layer, h = 128); one tensor of b x s x h elements missed or counted twice in
    each layer would be >= 2%."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    settings = {k: v for k, v in SMALL.items() if k != "model_type"}
    model = AutoModelForCausalLM.from_config(LlamaConfig(**settings), attn_implementation="sdpa")
    if regime == "bf16":
        model = model.to(torch.bfloat16)  # bf16 parameters, as FSDP2's mixed precision computes
    model.train()
    ids = torch.randint(0, 512, (2, 64))
    measured = _saved_bytes(model, ids, autocast=regime == "autocast")
    shape = model_shape(SMALL)
    if regime == "autocast":  # autograd also keeps autocast's bf16 copies of the matmul weights
        measured -= (shape.params - shape.vocab * shape.hidden) * 2
    plan = Settings(2, 64, 1, 2 if regime == "bf16" else 4, "no" if regime == "fp32" else "bf16", False)
    estimate = activation_bytes(shape, plan, Parallelism("single"), checkpointing=False)
    assert estimate == pytest.approx(measured, rel=0.01), (estimate, measured)

    # with checkpointing, the forward keeps each layer's input (and the head); backward then
    # recomputes one layer, whose share the line above has just checked
    model.gradient_checkpointing_enable()
    model.config.use_cache = False
    measured_ckpt = _saved_bytes(model, ids, autocast=regime == "autocast")
    if regime == "autocast":
        measured_ckpt -= shape.vocab * shape.hidden * 2  # the head's bf16 weight copy, outside the layers
    one_layer = (activation_bytes(shape, plan, Parallelism("single"), False) - _head(shape, plan)) // 3
    estimate_ckpt = activation_bytes(shape, plan, Parallelism("single"), checkpointing=True) - one_layer
    assert estimate_ckpt == pytest.approx(measured_ckpt, rel=0.01), (estimate_ckpt, measured_ckpt)


def _head(shape, plan):
    from uptrain.train.plan import head_activation_bytes, regime

    return head_activation_bytes(shape, 2, 64, regime(plan, Parallelism("single")))


def test_distillation_adds_the_teachers_forward_and_its_weights(llama2):
    from train_runs import ROOT as CHECKOUT

    fsdp = CHECKOUT / "configs" / "accelerate" / "fsdp.yaml"
    result = _plan(llama2, "--accelerate-config", fsdp, "--set", "distill.enabled=true")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    teacher = 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096) + ROOT  # the MHA source: 6.74B
    assert teacher == 6_738_415_616
    assert plan["memory"]["teacher"] == teacher * 2  # bf16, whole on every GPU
    compute = plan["compute"]
    tokens = compute["steps"] * compute["tokens_per_step"]
    assert compute["flops"] == pytest.approx(6 * N * tokens + 2 * teacher * tokens, rel=1e-12)
    # its log-softmax at temperature T and its logits join the student's at the head (fp32, fp32, bf16)
    without = json.loads(_plan(llama2, "--accelerate-config", fsdp).output)["memory"]["activations"]
    assert plan["memory"]["activations"] - without == TOKENS * 32000 * (4 + 4 + 2)


def test_qlora_on_one_24gb_gpu_counts_adapters_full_kv_and_4bit_weights(llama2):
    """train.lora rank 16 with load_in_4bit, by hand: adapters r x (in + out) on q, o (4096 -> 4096) and
    gate, up (4096 -> 11008), down (11008 -> 4096) of 32 layers; the new K/V (GQA-8: 4096 -> 1024) trained
    in full, held twice (frozen original and peft's trained copy); q, o and the MLP in NF4."""
    result = _plan(
        llama2,
        *("--set", "train.lora={rank: 16, load_in_4bit: true}"),
        *("--set", "train.per_device_batch=1", "--set", "train.grad_accum=128", "--device-memory", "24GB"),
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    adapters = 32 * 16 * (2 * (4096 + 4096) + 3 * (4096 + 11008))
    kv = 32 * 2 * 4096 * 1024
    quantized = 32 * (2 * 4096 * 4096 + 3 * 4096 * 11008)
    assert plan["model"]["params"] == N + adapters
    assert plan["model"]["trainable"] == adapters + kv
    memory = plan["memory"]
    nf4 = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4 bits, an 8-bit scale per 64, an fp32 scale per 256 scales
    assert memory["weights"] == int((N + adapters - quantized + kv) * 4 + quantized * nf4)
    assert memory["optimizer"] == 2 * (adapters + kv) * 4 and memory["gradients"] == (adapters + kv) * 4
    assert memory["total"] < 24 * 10**9 - 2 * GIB and plan["fits"] is True
