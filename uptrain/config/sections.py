"""The uptraining config: one YAML file, validated into typed sections.

Sections: model (what to uptrain, or what to convert first), data, budget, optim, train, distill,
eval, checkpoint, logging; and, read by `uptrain run` only, report (how source, converted and uptrained
are compared: evaluation.py, shared with `uptrain eval`) and push (where the result is published).
Every field carries its documentation (`setting(default, doc)`); docs/config.md is generated from them
(`python -m uptrain.config`). Unknown keys and wrong types are one-line errors naming the key;
`--set a.b=value` overrides any field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from uptrain.config.conversion import ConvertSection
from uptrain.config.evaluation import ReportSection
from uptrain.config.schema import override, setting
from uptrain.data import DEFAULT_DATASET
from uptrain.units import TokenCount

BUILTIN_PREFIX = "builtin:"


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
class TextSourceSection:
    """One text: the training text (data), an entry of data.mix, or eval.dataset. Written as a section,
    or as just its dataset (`eval.dataset: valid.txt`)."""

    shorthand = "dataset"  # a plain string stands for {dataset: ...}

    dataset: str | None = setting(
        DEFAULT_DATASET,
        "Hub dataset id, a local .txt/.json/.jsonl/.parquet file, or builtin:python-docs (offline text "
        "that ships with Python); null in data when data.mix names the sources.",
    )
    config: str | None = setting("wikitext-103-raw-v1", "Hub dataset configuration name.")
    split: str = setting("train", "Split to read.")
    text_column: str = setting("text", "Column holding the text.")
    streaming: bool = setting(False, "Stream the dataset instead of downloading it whole (large corpora).")


@dataclass
class MixSource(TextSourceSection):
    # every entry names its own text: one left out is an error, not a silent copy of the default dataset
    dataset: str | None = override(TextSourceSection, "dataset", None)
    weight: float = setting(1.0, "Share of the blocks drawn from this source (weights are normalised).")


@dataclass
class DataSection(TextSourceSection):
    shorthand = None  # `data:` is a section with more than its text

    mix: list[MixSource] = setting(
        doc="Train on a seeded mixture of sources instead of data.dataset (set it to null): each entry a "
        "text source with a weight, packed on its own, blocks drawn by datasets.interleave_datasets with "
        "the weights as probabilities and train.seed; the mixture streams when data.streaming or any "
        "entry does.",
        factory=list,
    )
    seq_len: int = setting(2048, "Tokens per packed training block (no padding).")
    add_eos: bool = setting(
        True,
        "End each row's tokens with EOS (rows are documents); off for line-per-row text such as WikiText.",
    )
    shuffle_buffer: int = setting(
        10_000,
        "Shuffle window of a streamed dataset, in blocks: each window is read whole and permuted "
        "(seeded); a checkpoint keeps the unread rest of the window, so --resume reads on from there.",
    )
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
class LoraSection:
    rank: int = setting(16, "Rank r of each low-rank update.")
    alpha: float = setting(32.0, "Scale of the update: alpha / rank (peft's lora_alpha).")
    dropout: float = setting(0.0, "Dropout on the adapters' input.")
    target_modules: list[str] = setting(
        doc="Glob patterns of the module names that get adapters (fnmatch, e.g. '*.q_proj'); empty: every "
        "linear layer but the output head (peft's all-linear). The new K/V projections follow train.lora.kv.",
        factory=list,
    )
    kv: Literal["full", "lora", "frozen"] = setting(
        "full",
        "How the new K/V projections (the converted ones, named by the architecture table) are trained: "
        "full (every weight, peft modules_to_save; the default, far better than lora in docs/RESULTS.md), "
        "lora (adapters) or frozen.",
    )
    load_in_4bit: bool = setting(
        False,
        "QLoRA: hold the frozen base weights in 4-bit NF4 (bitsandbytes, CUDA GPU only); the merged "
        "final checkpoint is still built from the unquantized weights.",
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
        "The others stay frozen, which saves their gradients and optimizer state. With train.lora, "
        "every module holding a matching parameter is trained in full beside the adapters.",
        factory=list,
    )
    lora: LoraSection | None = setting(
        None,
        "Parameter-efficient training through peft (LoRA, or QLoRA with load_in_4bit); `lora: {}` for the "
        "defaults. Checkpoints hold only the trained state; final/ is merged into plain weights and "
        "OUTPUT/adapter keeps the unmerged peft adapter. One process or DDP (FSDP and DeepSpeed: not yet).",
    )

    def global_batch(self, processes: int) -> int:
        """Blocks one optimizer step trains on: per_device_batch x grad_accum x processes."""
        return self.per_device_batch * self.grad_accum * processes


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
    dataset: TextSourceSection | None = setting(
        None,
        "Score the held-out curve on another text (its own config, split, text_column), as `uptrain eval` "
        "does: its first eval.blocks x data.seq_len tokens in windows of data.seq_len, stride half a "
        "window; nothing is then held out of the training text. Not with eval.split.",
    )
    blocks: int = setting(64, "Held-out blocks of data.seq_len tokens (with eval.dataset: their tokens).")
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
class CompareSection:
    methods: list[str] = setting(
        doc="uptrain run: convert and uptrain once per method (model.convert.method values), from the same "
        "source with the same tokens and budget, into OUTPUT/<method>/, and compare them in "
        "OUTPUT/comparison.md (empty: one run with model.convert.method).",
        factory=list,
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
    compare: CompareSection = setting(
        doc="uptrain run: several conversion methods side by side.", factory=CompareSection
    )
    push: PushSection = setting(
        doc="uptrain run: publish final/ to the Hub at the end (when push.repo is set).", factory=PushSection
    )

    def tokens_per_step(self, processes: int) -> int:
        """Tokens one optimizer step trains on: the global batch of data.seq_len-token blocks."""
        return self.train.global_batch(processes) * self.data.seq_len
