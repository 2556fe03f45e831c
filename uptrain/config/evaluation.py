"""The evaluation schema: every setting of scoring models on one text, defined once.

    TextSection     what text: dataset, dataset_config, split, text_column
    ScoringSection  how it is scored: window, stride, harness, tasks, batch, dtype, KV context ...
    ReportSection   = TextSection + ScoringSection + what only `uptrain run` does (continuations,
                    plots): a run config's `report:` section, listed in docs/config.md
    EvalSettings    = ScoringSection + what `uptrain eval` also measures (device, KV batch, decode
                    speed): what the library takes (uptrain.evaluate.evaluate_checkpoints)
    EvalCommand     = TextSection + EvalSettings + what only the command has (the models, one shared
                    tokenizer, output files, trust flags): `uptrain eval`'s arguments and options are
                    generated from its fields (uptrain/cli/eval.py), as `uptrain convert`'s are from
                    ConvertSection

Where `uptrain eval` and a run differ in a default, the subclass redeclares that one field and says
why beside it. A field's `cli` metadata says how a generated command line spells it where the rule
(`text_column` -> `--text-column`) is not enough.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from uptrain.config.schema import override, setting
from uptrain.data import DEFAULT_CONFIG, DEFAULT_DATASET, TextSource


@dataclass
class TextSection:
    dataset: str | None = setting(
        None,
        "Text on which `uptrain run` compares source, converted and uptrained (a Hub id, local file or "
        "builtin:python-docs); null: the training run's held-out blocks (eval.blocks x data.seq_len tokens).",
    )
    dataset_config: str | None = setting(
        None,
        "Hub dataset configuration name of the dataset (uptrain eval: wikitext-2-raw-v1 for its default).",
    )
    split: str = setting("test", "Split of the dataset.")
    text_column: str = setting("text", "Column of the dataset holding the text.")


@dataclass
class TasksSection:
    names: list[str] = setting(
        doc="lm-evaluation-harness task or group names (hellaswag, arc_easy, ...; comma-separated after "
        "--tasks); needs uptrain-gqa[eval].",
        factory=list,
        cli={"name": "tasks"},
    )
    num_fewshot: int | None = setting(None, "Few-shot examples per prompt (default: each task's own).")
    limit: float | None = setting(None, "Examples per task (a fraction when below 1; default: all).")
    include_path: str | None = setting(None, "Folder of extra task YAML files (lm_eval's include path).")


@dataclass
class ScoringSection:
    max_tokens: int | None = setting(None, "Score only the first N tokens of the joined text.")
    window: int | None = setting(
        None,
        "Sliding window in tokens (default: min(max positions, 2048); uptrain run's held-out blocks: "
        "data.seq_len).",
    )
    stride: int | None = setting(None, "Stride of the sliding window in tokens (default: window / 2).")
    harness: bool = setting(
        False,
        "Also word/byte perplexity and bits/byte as lm_eval computes them, each document alone (not on "
        "uptrain run's held-out blocks).",
    )
    detokenize: Literal["none", "wikitext"] = setting(
        "none",
        "none, or wikitext: score each document after lm_eval's wikitext detokenizer (words and bytes "
        "counted on the original; with harness).",
    )
    tasks: TasksSection = setting(
        doc="Downstream tasks through lm_eval, the same settings for every model.", factory=TasksSection
    )
    batch_size: int = setting(4, "Windows per forward pass.")
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = setting(
        "auto", "dtype each model is evaluated in: auto (each checkpoint's own), bf16, fp16 or fp32."
    )
    kv_context: int = setting(
        2048, "Context in tokens for the KV-cache size (at batch 1 in uptrain run; and the decode benchmark)."
    )


@dataclass
class ReportSection(ScoringSection, TextSection):
    prompts: list[str] = setting(
        doc="Prompts whose greedy continuation the report shows for every model (source, converted, "
        "uptrained): what a person reads first.",
        factory=list,
    )
    continuation_tokens: int = setting(24, "New tokens of each greedy continuation.")
    plots: bool = setting(
        True, "Draw training.png, perplexity.png, kv_cache.png, with report.tasks tasks.png (matplotlib)."
    )


@dataclass
class EvalSettings(ScoringSection):
    # `uptrain eval` scores word/byte perplexity unless --no-harness; a run, only when report.harness
    # asks (it is a second pass over the text for each of its three models).
    harness: bool = override(ScoringSection, "harness", True, cli={"negatable": True})
    device: str | None = setting(
        None, "auto, cpu, cuda or cuda:N (default auto: the first CUDA device when there is one, else cpu)."
    )
    kv_batch: int = setting(1, "Batch for the KV-cache size and the decode benchmark.")
    decode_bench: bool = setting(False, "Measure decode tokens/s with the KV cache.")
    decode_tokens: int = setting(32, "Tokens generated per sequence by --decode-bench.")


@dataclass
class EvalCommand(EvalSettings, TextSection):
    # A run's null dataset means its held-out blocks; the command has none, so it reads WikiText-2.
    dataset: str = setting(
        DEFAULT_DATASET,
        "Hub dataset id, a dataset folder, or a local .txt/.json/.jsonl/.parquet file (default: "
        "WikiText-2 raw).",
    )
    models: list[str] = setting(
        doc="Checkpoints to compare: model directories, .gguf files or Hub ids. The first is the baseline.",
        factory=list,
        cli={"argument": "MODEL", "required": True},
    )
    tokenizer: str | None = setting(None, "Tokenizer directory for all models (default: each model's own).")
    json: str | None = setting(None, "Write the report as JSON to this file.")
    markdown: str | None = setting(None, "Write the table as Markdown to this file.")
    allow_pickle: bool = setting(False, "Load pickled .bin weights (trusted only).")
    trust_remote_code: bool = setting(False, "Run a checkpoint's own Python code (auto_map; trusted only).")

    def text_source(self) -> TextSource:
        """The text to score: the default dataset in its wikitext-2-raw-v1 config unless another is named."""
        config = self.dataset_config
        if config is None and self.dataset == DEFAULT_DATASET:
            config = DEFAULT_CONFIG
        return TextSource(self.dataset, config, self.split, self.text_column)


def shared_fields(obj: object, cls: type) -> dict[str, object]:
    """The values of `obj`'s fields that dataclass `cls` also declares: how one schema's object becomes
    another's (a run's report section -> the EvalSettings it is scored with) without a hand-written map."""
    return {f.name: getattr(obj, f.name) for f in fields(cls) if hasattr(obj, f.name)}
