"""train.lora: parameter-efficient uptraining through peft (LoRA, or QLoRA on 4-bit base weights).

peft wraps the loaded model: adapters on the modules train.lora.target_modules names, the new K/V
projections trained in full (peft's modules_to_save), by adapters or not at all (train.lora.kv), and
every module holding a train.trainable parameter trained in full. Checkpoints hold only what trains
(save/load hooks on the Accelerator), so they stay small. At the end the adapter is written unmerged to
OUTPUT/adapter (peft's format) and merged by peft into a fresh, unquantized fp32 copy of the model
that was uptrained, which final/ then holds as plain weights in the source's dtype.
"""

from __future__ import annotations

import fnmatch
import importlib.util
from pathlib import Path
from typing import Any

import torch

from uptrain.checkpoint.atomic import atomic_directory
from uptrain.checkpoint.loading import load_causal_lm
from uptrain.config import LoraSection, TrainSection, UptrainConfig
from uptrain.errors import UptrainError
from uptrain.train.final import strip_compile_prefix, write_final

MODEL_FILE = "model.safetensors"  # what accelerator.save_state names the (first) model's weights


def check_lora(cfg: UptrainConfig) -> None:
    """Before anything is written: peft is installed, and 4-bit has bitsandbytes and a CUDA GPU."""
    lora = cfg.train.lora
    if lora is None:
        return
    if importlib.util.find_spec("peft") is None:
        raise UptrainError("train.lora needs the peft package; pip install peft")
    if lora.load_in_4bit:
        missing = [
            what
            for what, absent in (
                ("the bitsandbytes package (pip install bitsandbytes)", not _has("bitsandbytes")),
                ("a CUDA GPU", not torch.cuda.is_available()),
            )
            if absent
        ]
        if missing:
            raise UptrainError(
                f"train.lora.load_in_4bit needs {' and '.join(missing)}; "
                "set train.lora.load_in_4bit: false to train LoRA on full-precision weights"
            )


def _has(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def load_base(path: Path, dtype: torch.dtype, cfg: UptrainConfig, device: Any) -> Any:
    """The model to train: as load_causal_lm gives it, or with 4-bit NF4 weights on `device` (QLoRA)."""
    lora = cfg.train.lora
    trust = cfg.model.trust_remote_code
    if lora is None or not lora.load_in_4bit:
        return load_causal_lm(path, dtype=dtype, trust_remote_code=trust)
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    # what trains in full (the new K/V, train.trainable's modules) stays unquantized, as the head
    meta = _meta_model(path, trust)
    _, full = lora_plan(meta, cfg.train)
    head = next((n for n, m in meta.named_modules() if m is meta.get_output_embeddings()), "lm_head")
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
        llm_int8_skip_modules=[head, *full],
    )
    model = AutoModelForCausalLM.from_pretrained(
        str(path),
        quantization_config=quant,
        dtype=dtype,
        device_map={"": device},
        trust_remote_code=trust,
        use_safetensors=True,
    )
    return model.eval()


def kv_modules(model: Any) -> list[str]:
    """Names of the modules holding the K/V projections (the fused QKV module where K and V share
    one), from the architecture table; [] for a model_type it does not know."""
    from uptrain.architectures import get_architecture

    try:
        arch = get_architecture(getattr(model.config, "model_type", None))
    except UptrainError:
        return []
    parts = [arch.k, arch.v] if arch.k and arch.v else [arch.qkv]
    patterns = [f"{arch.attention.replace('{layer}', '*')}.{p}" for p in parts if p]
    return [n for n, _ in model.named_modules() if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def lora_plan(model: Any, t: TrainSection) -> tuple[list[str], list[str]]:
    """(modules that get adapters, modules trained in full), as full module names."""
    lora = t.lora
    assert lora is not None
    kv = kv_modules(model)
    if lora.kv != "frozen" and not kv:
        raise UptrainError(
            f"train.lora.kv: {lora.kv}: the architecture table has no K/V projections for "
            f"model_type {getattr(model.config, 'model_type', None)!r}; set train.lora.kv: frozen"
        )
    head = model.get_output_embeddings()
    modules = dict(model.named_modules())
    owners = {n.rsplit(".", 1)[0] for n, _ in model.named_parameters() if _matches(n, t.trainable)}
    if lora.target_modules:
        targets = [n for n in modules if _matches(n, lora.target_modules)]
    else:  # peft's all-linear: every linear layer but the output head and those train.trainable names
        linear = [n for n, m in modules.items() if isinstance(m, torch.nn.Linear) and m is not head]
        targets = [n for n in linear if n not in owners]
    targets = [n for n in targets if n not in kv] + (kv if lora.kv == "lora" else [])
    if not targets:
        example = next((n for n in modules if n.endswith("proj")), list(modules)[-1])
        raise UptrainError(
            f"train.lora.target_modules {lora.target_modules} matches no module; names look like {example!r}"
        )
    both = sorted(owners & set(targets))
    if both:
        raise UptrainError(
            f"{both[0]} is both in train.trainable and adapted by train.lora; drop it from one of them"
        )
    full = list(kv) if lora.kv == "full" else []
    full += sorted(owners - set(full))
    if t.trainable and not owners:
        example = next((n for n, _ in model.named_parameters() if "attn" in n), "")
        raise UptrainError(f"train.trainable {t.trainable} matches no parameter; names look like {example!r}")
    return targets, full


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _meta_model(path: Path, trust_remote_code: bool) -> Any:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)


def check_lora_plan(path: Path, cfg: UptrainConfig, accelerator: Any) -> None:
    """lora_plan's errors before the run writes anything (the model built on the meta device); and
    FSDP, refused: on two CPU processes LoRA under FSDP2 runs but its losses drift from one process's
    (by 4e-4 relative at the second step), unlike full training, so it is not trusted yet."""
    if cfg.train.lora is None:
        return
    if str(getattr(accelerator, "distributed_type", "")).endswith("DEEPSPEED"):
        raise UptrainError(
            "train.lora does not support DeepSpeed yet; launch it with DDP or FSDP2 "
            "(configs/accelerate/ddp.yaml, fsdp.yaml), with train.lora.load_in_4bit to fit a larger model"
        )
    lora_plan(_meta_model(path, cfg.model.trust_remote_code), cfg.train)


def lora_counts(model: Any, t: TrainSection) -> tuple[int, int, int]:
    """(adapter parameters, parameters trained in full, parameters held in 4-bit with load_in_4bit) of
    `model` (e.g. on the meta device) under train.lora: what uptrain plan counts. A rank-r adapter on a
    linear layer of in x out adds r * (in + out); the 4-bit ones are the weights of every other linear
    layer but the output head."""
    assert t.lora is not None
    targets, full = lora_plan(model, t)
    modules = dict(model.named_modules())
    adapters = sum(t.lora.rank * (modules[n].in_features + modules[n].out_features) for n in targets)
    in_full = sum(p.numel() for n in full for p in modules[n].parameters())
    head = model.get_output_embeddings()
    quantized = 0
    if t.lora.load_in_4bit:
        kept = set(full)
        linear = [(n, m) for n, m in modules.items() if isinstance(m, torch.nn.Linear) and m is not head]
        quantized = sum(m.weight.numel() for n, m in linear if n not in kept)
    return adapters, in_full, quantized


def apply_lora(model: Any, t: TrainSection, gradient_checkpointing: bool) -> tuple[Any, str]:
    """Wrap `model` in peft as train.lora says; returns the peft model and a line saying what trains."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    lora = t.lora
    assert lora is not None
    targets, full = lora_plan(model, t)
    if lora.load_in_4bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        modules_to_save=full or None,
        bias="none",
        task_type="CAUSAL_LM",
    )
    # peft draws lora_A from the global RNG, whose state differs between processes by then (the main
    # process converted the model first); DDP broadcasts rank 0's weights but FSDP2 keeps each rank's
    # own shard, so the adapters are drawn here from train.seed, the same on every process
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(t.seed)
        model = get_peft_model(model, config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # the base model's own parameters (a 4-bit base counts its packed storage, two weights per element)
    total = sum(
        p.numel() for n, p in model.named_parameters() if "lora_" not in n and "modules_to_save" not in n
    )
    bits = ", 4-bit base weights" if lora.load_in_4bit else ""
    line = (
        f"LoRA rank {lora.rank} on {len(targets)} modules, {len(full)} trained in full "
        f"(K/V: {lora.kv}{bits}); "
        f"training {trainable:,} parameters beside the model's {total:,}"
    )
    return model, line


def trainable_names(model: Any) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def register_trainable_checkpoints(accelerator: Any) -> None:
    """Make accelerator.save_state write only the trained parameters of each model, and load_state
    read them back (the frozen weights are the model's own, loaded afresh). Under FSDP and DeepSpeed
    Accelerate saves the model its own way, untouched by these hooks."""

    def save(models: list[Any], weights: list[dict[str, Any]], _: str) -> None:
        # under FSDP and DeepSpeed `weights` is empty: Accelerate saved the models itself
        for i, (model, state) in enumerate(zip(models, weights, strict=False)):
            keep = trainable_names(model)
            weights[i] = {k: v for k, v in state.items() if k in keep}

    def load(models: list[Any], input_dir: str) -> None:
        from safetensors.torch import load_file

        for i, model in enumerate(models):
            path = Path(input_dir) / (MODEL_FILE if i == 0 else MODEL_FILE.replace(".", f"_{i}."))
            state = load_file(path)
            expected = trainable_names(model)
            if set(state) != expected:
                raise UptrainError(
                    f"{input_dir} holds other trained parameters than this run trains "
                    f"({len(state)} saved, {len(expected)} expected); resume with the same train.lora"
                )
            model.load_state_dict(state, strict=False)
        models.clear()  # loaded: Accelerate must not load them again, strictly

    accelerator.register_save_state_pre_hook(save)
    accelerator.register_load_state_pre_hook(load)


def save_lora_final(
    accelerator: Any,
    model: Any,
    tokenizer: Any,
    run_root: Path,
    final: Path,
    student: Path,
    record: dict[str, Any],
    training: dict[str, Any],
    dtype: torch.dtype,
    trust_remote_code: bool = False,
) -> Path:
    """Write the unmerged adapter to RUN/adapter and the merged model to `final`; every process must
    call it. The merge is peft's merge_and_unload on a fresh fp32 copy of the student (never on 4-bit
    weights), so final/ holds plain weights that AutoModelForCausalLM loads without peft."""
    adapter = run_root / "adapter"
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        from peft import PeftModel

        bare = accelerator.unwrap_model(model, keep_torch_compile=False)
        with atomic_directory(adapter, overwrite=True) as tmp:
            bare.save_pretrained(tmp, state_dict=strip_compile_prefix(state_dict))
        base = load_causal_lm(student, dtype=torch.float32, trust_remote_code=trust_remote_code)
        merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
        write_final(merged, merged.state_dict(), tokenizer, final, student, record, training, dtype)
    accelerator.wait_for_everyone()
    return adapter


def lora_summary(lora: LoraSection | None) -> dict[str, Any] | None:
    """train.lora as uptrain.json's training section records it."""
    return None if lora is None else dict(vars(lora))
