"""`uptrain plan`: the memory and compute a config will need, from the model's config.json alone (a
meta-device model: nothing downloaded beyond config.json) and the accelerate config it will be launched
with. The arithmetic is uptrain.train.plan; this module gathers its inputs and words its answer."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from uptrain.checkpoint.meta import fetch_config, meta_model
from uptrain.config import TrainSection, UptrainConfig
from uptrain.errors import UptrainError
from uptrain.pipeline.model_config import source_config, student_config
from uptrain.train.budget import describe_budget, plan_budget
from uptrain.train.lora import lora_counts
from uptrain.train.model_checks import matching
from uptrain.train.plan import (
    ComputePlan,
    MemoryPlan,
    ModelShape,
    Parallelism,
    Settings,
    Verdict,
    judge,
    plan_compute,
    plan_memory,
)
from uptrain.units import format_bytes, format_tokens

WEIGHT_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
_SIZE = re.compile(r"^\s*([0-9.]+)\s*(GB|GiB|G|TB|TiB|MB|MiB)?\s*$", re.IGNORECASE)
_UNITS = {"gb": 10**9, "gib": 2**30, "g": 2**30, "tb": 10**12, "tib": 2**40, "mb": 10**6, "mib": 2**20}


def parse_memory(text: str) -> int:
    """'80GB' (10^9 bytes), '80GiB' or '80G' (2^30), a plain number: GiB."""
    m = _SIZE.match(text)
    if not m:
        raise UptrainError(f"--device-memory {text!r} is not a size; write e.g. 80GB or 141GiB")
    return int(float(m[1]) * _UNITS[(m[2] or "GiB").lower()])


def model_shape(
    config: dict, trainable_patterns: list[str] | None = None, train: TrainSection | None = None
) -> ModelShape:
    """Parameter counts and dimensions of the model `config` describes, from a meta-device model; with
    train.lora (`train`), its adapters, what trains in full and what is held in 4-bit."""
    model = meta_model(config)
    if model is None:
        raise UptrainError(f"transformers has no model class for model_type {config.get('model_type')!r}")
    text = config.get("text_config") or config
    layers = int(text["num_hidden_layers"])
    named = {name: p.numel() for name, p in model.named_parameters()}
    blocks = next(
        (m for m in model.modules() if isinstance(m, __import__("torch").nn.ModuleList) and len(m) == layers),
        None,
    )
    if blocks is None:
        raise UptrainError("cannot find the decoder layers of this model to plan for")
    layer_params = sum(p.numel() for p in blocks[0].parameters())
    params = sum(named.values())
    trainable = sum(named[n] for n in matching(list(named), trainable_patterns or []))
    heads = int(text["num_attention_heads"])
    hidden = int(text["hidden_size"])
    copies = quantized = 0
    root_params = params - layers * layer_params  # (FSDP's root unit; adapters are counted in `params`)
    if train is not None and train.lora is not None:
        adapters, copies, quantized = lora_counts(model, train)
        params += adapters
        trainable = adapters + copies
    return ModelShape(
        params=params,
        trainable=trainable,
        copies=copies,
        quantized=quantized,
        layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=int(text.get("num_key_value_heads") or heads),
        head_dim=int(text.get("head_dim") or hidden // heads),
        intermediate=int(text.get("intermediate_size") or 4 * hidden),
        vocab=int(text["vocab_size"]),
        layer_params=layer_params,
        root_params=root_params,
    )


def read_parallelism(path: Path | None) -> tuple[Parallelism, str]:
    """The strategy and process count of an `accelerate launch` config file (none: one process)."""
    if path is None:
        return Parallelism("single", 1), "1 process"
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UptrainError(f"--accelerate-config {path}: cannot read it ({type(exc).__name__})") from None
    kind = str(data.get("distributed_type", "NO")).upper()
    processes, machines = int(data.get("num_processes", 1) or 1), int(data.get("num_machines", 1) or 1)
    where = f"{processes} processes on {machines} machine{'s' * (machines > 1)}"
    if kind == "FSDP":
        fsdp = data.get("fsdp_config") or {}
        reshard = fsdp.get("fsdp_reshard_after_forward", fsdp.get("fsdp_sharding_strategy", True))
        if str(reshard).upper() not in ("TRUE", "FULL_SHARD", "1"):
            raise UptrainError(
                "uptrain plan models FSDP full sharding only (fsdp_reshard_after_forward: true); "
                f"{path} asks for {reshard}"
            )
        version = fsdp.get("fsdp_version", 1)
        return Parallelism("fsdp", processes, machines), f"FSDP{version} full shard, {where}"
    if kind == "DEEPSPEED":
        stage = (data.get("deepspeed_config") or {}).get("zero_stage")
        if stage != 3:
            raise UptrainError(
                f"uptrain plan models DeepSpeed ZeRO stage 3 only; {path} has zero_stage {stage}"
            )
        return Parallelism("zero3", processes, machines), f"DeepSpeed ZeRO-3, {where}"
    if processes > 1 or kind in ("MULTI_GPU", "MULTI_CPU"):
        return Parallelism("ddp", processes, machines), f"DDP, {where}"
    return Parallelism("single", 1), "1 process"


def detected_memory() -> tuple[int | None, str]:
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return int(props.total_memory), f"{props.name}, found"
    return None, "no GPU found here"


@dataclass
class Plan:
    shape: ModelShape
    settings: Settings
    parallel: Parallelism
    strategy: str  # in words
    memory: MemoryPlan
    verdict: Verdict
    device: str  # where the device memory came from, in words
    device_memory: int | None
    budget: str  # describe_budget's line, or why the budget is unknown
    compute: ComputePlan | None


def _teacher(cfg: UptrainConfig) -> ModelShape | None:
    if not cfg.distill.enabled:
        return None
    ref = cfg.distill.teacher
    try:
        config = fetch_config(ref) if ref else source_config(cfg.model, download=True)
    except UptrainError as exc:
        raise UptrainError(f"distill.teacher: {exc}") from None
    return model_shape(config) if config else None


def make_plan(cfg: UptrainConfig, accelerate_config: Path | None, device_memory: int | None) -> Plan:
    config = student_config(cfg.model, download=True)
    if config is None:
        raise UptrainError("uptrain plan needs the model's config.json: a checkpoint directory or Hub id")
    shape = model_shape(config, cfg.train.trainable, cfg.train)
    teacher = _teacher(cfg)
    t = cfg.train
    precision = t.mixed_precision if t.mixed_precision != "auto" else "bf16"
    settings = Settings(
        per_device_batch=t.per_device_batch,
        seq_len=cfg.data.seq_len,
        grad_accum=t.grad_accum,
        weight_bytes=WEIGHT_BYTES[cfg.model.dtype],
        mixed_precision=precision,
        gradient_checkpointing=t.gradient_checkpointing,
        teacher_params=teacher.params if teacher else 0,
        teacher_vocab=teacher.vocab if teacher else 0,
    )
    parallel, strategy = read_parallelism(accelerate_config)
    if device_memory is not None:
        device = "given"
    else:
        device_memory, device = detected_memory()
    b = cfg.budget
    per_step = cfg.tokens_per_step(parallel.processes)
    try:
        budget = plan_budget(per_step, b.pretraining_tokens, b.fraction, b.max_tokens, b.max_steps)
        compute: ComputePlan | None = plan_compute(shape, settings, per_step, budget.steps)
        words = describe_budget(budget)
    except UptrainError as exc:
        compute, words = None, f"unknown: {exc}"
    memory = plan_memory(shape, settings, parallel)
    verdict = judge(shape, settings, parallel, device_memory)
    return Plan(shape, settings, parallel, strategy, memory, verdict, device, device_memory, words, compute)


def _params(n: int) -> str:
    return f"{format_tokens(n)} ({n:,})"


def _gathered_note(plan: Plan) -> str:
    if plan.parallel.shards > 1:
        return "FSDP's unsharded root unit, 2 layers and 1 layer's gradients"
    if plan.memory.gathered:
        return "autocast's bf16 copies of the matmul weights"
    return "nothing: no sharding, no autocast"


def describe_plan(plan: Plan, tflops: float | None = None, mfu: float = 0.4) -> list[str]:
    m, s, mem = plan.shape, plan.settings, plan.memory
    ckpt = "on" if s.gradient_checkpointing else "off"
    lines = [
        f"model: {_params(m.params)} parameters ({_params(m.trainable)} trainable), {m.layers} layers, "
        f"hidden {m.hidden}, {m.heads} heads, {m.kv_heads} KV heads, vocabulary {m.vocab:,}",
        f"parallelism: {plan.strategy}",
        f"micro-batch: {s.per_device_batch} x {s.seq_len} tokens per device, mixed precision "
        f"{s.mixed_precision}, gradient checkpointing {ckpt}",
        "memory per device:",
        f"  weights      {format_bytes(mem.weights):>12}",
        f"  gradients    {format_bytes(mem.gradients):>12}",
        f"  optimizer    {format_bytes(mem.optimizer):>12}  (AdamW: 2 states)",
        f"  gathered     {format_bytes(mem.gathered):>12}  ({_gathered_note(plan)})",
        f"  activations  {format_bytes(mem.activations):>12}  (with checkpointing "
        f"{format_bytes(mem.activations_with)}, without {format_bytes(mem.activations_without)})",
    ]
    if mem.teacher:
        lines.append(
            f"  teacher      {format_bytes(mem.teacher):>12}  (unsharded, {_params(s.teacher_params)})"
        )
    lines.append(f"  total        {format_bytes(mem.total):>12}")
    v = plan.verdict
    if v.fits is None:
        lines.append(f"device: {plan.device}; pass --device-memory (e.g. 80GB) to check the fit")
    else:
        size = f"{format_bytes(plan.device_memory or 0)} ({plan.device})"
        usable = f"{format_bytes(v.usable or 0)} usable after 2 GiB reserved"
        if v.fits:
            lines.append(f"device: {size}: fits, {usable}")
        else:
            fix = "; or ".join(v.advice) if v.advice else "no single change found; use more GPUs"
            lines.append(f"device: {size}: does NOT fit ({usable}); to fit: {fix}")
    lines.append(f"budget: {plan.budget}")
    c = plan.compute
    if c is not None:
        text = f"compute: {c.flops:.3g} FLOPs (6 x N x tokens"
        text += " + 2 x N_teacher x tokens)" if s.teacher_params else ")"
        if c.recompute_flops:
            text += f", plus {c.recompute_flops:.3g} recomputed by gradient checkpointing"
        lines.append(text)
        if tflops:
            n = plan.parallel.processes
            hours = c.flops / (n * tflops * 1e12 * mfu) / 3600  # MFU counts model FLOPs only
            devices = f"each of {n} devices" if n > 1 else "1 device"
            lines.append(
                f"time: {hours:,.1f} hours at {mfu:.0%} model FLOPs utilisation "
                f"of {tflops:g} TFLOP/s on {devices}"
            )
    return lines


def plan_record(plan: Plan) -> dict[str, Any]:
    """The plan as JSON-ready numbers (bytes, FLOPs)."""
    from dataclasses import asdict

    return {
        "model": asdict(plan.shape),
        "parallelism": {**asdict(plan.parallel), "words": plan.strategy},
        "memory": {**asdict(plan.memory), "total": plan.memory.total},
        "device_memory": plan.device_memory,
        "fits": plan.verdict.fits,
        "advice": plan.verdict.advice,
        "budget": plan.budget,
        "compute": asdict(plan.compute) if plan.compute else None,
    }
