"""Several models on the same tokens: one report, JSON-able, with a table for terminals and cards."""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from uptrain.checkpoint.devices import resolve_device
from uptrain.config.evaluation import EvalSettings
from uptrain.config.schema import to_plain
from uptrain.data import DOCUMENT_SEPARATOR, join_documents
from uptrain.errors import UptrainError
from uptrain.evaluate.checkpoints import Checkpoint, check_vocabulary, shared_tokens
from uptrain.evaluate.checks import check_settings
from uptrain.evaluate.decode import DecodeResult, KVCost, decode_throughput, kv_cost
from uptrain.evaluate.documents import documents_within, harness_documents
from uptrain.evaluate.harness import HarnessResult, harness_metrics
from uptrain.evaluate.tasks import run_tasks, task_settings
from uptrain.evaluate.token_perplexity import (
    PerplexityResult,
    check_window_fits,
    default_window,
    perplexity_of_ids,
)
from uptrain.evaluate.windows import check_window_and_stride

StageProgress = Callable[[str, int, int], None]  # (what is running, done, total)


@dataclass(frozen=True)
class ModelEvaluation:
    model: str  # the name it was given
    kv_heads: int | None
    dtype: str
    perplexity: PerplexityResult
    kv: KVCost
    harness: HarnessResult | None = None
    decode: DecodeResult | None = None
    decode_speedup: float | None = None  # decode tokens/s relative to the first model
    path: str | None = None  # where it was loaded from
    tasks: dict[str, dict[str, float]] | None = None  # lm_eval task -> metric -> value

    def to_dict(self) -> dict[str, Any]:
        h = self.harness
        return {
            "model": self.model,
            "path": self.path or self.model,
            "kv_heads": self.kv_heads,
            "dtype": self.dtype,
            "perplexity": self.perplexity.perplexity,
            "nll": self.perplexity.nll,
            "tokens_scored": self.perplexity.tokens_scored,
            "word_perplexity": h.word_perplexity if h else None,
            "byte_perplexity": h.byte_perplexity if h else None,
            "bits_per_byte": h.bits_per_byte if h else None,
            "kv_bytes_per_token": self.kv.bytes_per_token,
            "kv_bytes": self.kv.bytes,
            "decode_tokens_per_s": self.decode.tokens_per_s if self.decode else None,
            "decode_speedup": self.decode_speedup,
            "tasks": self.tasks,
            "details": {
                "perplexity": self.perplexity.to_dict(),
                "harness": h.to_dict() if h else None,
                "kv": self.kv.to_dict(),
                "decode": self.decode.to_dict() if self.decode else None,
            },
        }


@dataclass(frozen=True)
class EvalReport:
    dataset: dict[str, Any]  # what the text is: dataset, dataset_config, split, text_column, source ...
    settings: EvalSettings  # with window and stride resolved
    tokens: int
    models: list[ModelEvaluation] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; the flat keys (dataset, dataset_config, split, tokens, window, stride, and per
        model perplexity, word_perplexity, bits_per_byte, kv_bytes_per_token, path) are what model
        cards read (uptrain.hub.card)."""
        return {
            **self.dataset,
            "tokens": self.tokens,
            "window": self.settings.window,
            "stride": self.settings.stride,
            "settings": recorded_settings(self.settings),
            "versions": versions(),
            "models": [m.to_dict() for m in self.models],
        }


def recorded_settings(settings: EvalSettings) -> dict[str, Any]:
    """The settings as report.json has always held them (model cards read num_fewshot and limit there):
    flat, the task names as `tasks` beside the task options."""
    plain = to_plain(settings)
    tasks = plain.pop("tasks")
    return {**plain, "tasks": tasks.pop("names"), **tasks}


def versions() -> dict[str, str]:
    import datasets
    import transformers

    from uptrain import __version__

    return {
        "uptrain": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
    }


def _kv_heads(model: Any) -> int | None:
    config = model.config.get_text_config()
    if getattr(config, "kv_lora_rank", None):  # MLA: one latent (and RoPE key) shared by all heads
        return 1
    return getattr(config, "num_key_value_heads", None) or getattr(config, "num_attention_heads", None)


def evaluate_model(
    name: str,
    model: Any,
    tokenizer: Any,
    ids: torch.Tensor,
    documents: str | Sequence[str],
    settings: EvalSettings,
    progress: StageProgress | None = None,
) -> ModelEvaluation:
    """Every metric of one loaded model on already tokenized ids and the documents they cover (a
    string is one document); the harness metrics score each document on its own, the lm_eval tasks
    run on the model as it is. `settings.window` and `settings.stride` must be resolved."""
    check_vocabulary(model, ids, name)
    check_window_fits(model, settings.window, name)

    def stage(label: str) -> Callable[[int, int], None] | None:
        return (lambda done, total: progress(f"{name}: {label}", done, total)) if progress else None

    ppl = perplexity_of_ids(
        model, ids, settings.window, settings.stride, settings.batch_size, stage("perplexity")
    )
    harness = None
    if settings.harness:
        listed = [documents] if isinstance(documents, str) else documents
        docs = harness_documents(listed, settings.detokenize)
        harness = harness_metrics(
            model, tokenizer, docs, settings.window, settings.batch_size, stage("word/byte perplexity")
        )
    tasks = None
    if settings.tasks.names:
        if progress:
            progress(f"{name}: lm_eval {','.join(settings.tasks.names)}", 0, 1)
        tasks = run_tasks(model, tokenizer, task_settings(settings))
    decode = None
    if settings.decode_bench:
        if progress:
            progress(f"{name}: decode", 0, 1)
        decode = decode_throughput(model, settings.kv_batch, settings.kv_context, settings.decode_tokens)
    return ModelEvaluation(
        model=name,
        kv_heads=_kv_heads(model),
        dtype=str(model.dtype).removeprefix("torch."),
        perplexity=ppl,
        kv=kv_cost(model, settings.kv_batch, settings.kv_context),
        harness=harness,
        decode=decode,
        tasks=tasks,
    )


def _with_speedups(results: list[ModelEvaluation]) -> list[ModelEvaluation]:
    if not results or results[0].decode is None:
        return results
    base = results[0].decode.tokens_per_s
    return [replace(r, decode_speedup=r.decode.tokens_per_s / base if r.decode else None) for r in results]


def resolve_window(settings: EvalSettings, configs: Sequence[Any]) -> EvalSettings:
    """`settings` with the window (default: min of the models' max positions, 2048) and the stride
    (default: half the window) resolved and checked."""
    window = settings.window or min(default_window(c) for c in configs)
    stride = settings.stride or max(1, window // 2)
    check_window_and_stride(window, stride)
    return replace(settings, window=window, stride=stride)


def evaluate_checkpoints(
    checkpoints: Sequence[Checkpoint],
    texts: str | Sequence[str],
    settings: EvalSettings | None = None,
    dataset: dict[str, Any] | None = None,
    tokenizer: Any = None,
    progress: StageProgress | None = None,
) -> EvalReport:
    """Load each checkpoint in turn and score it on the same tokens; the report's first model is
    the baseline for decode speedups. `settings` (default: EvalSettings()) are checked first."""
    settings = check_settings(settings or EvalSettings())
    return score_checkpoints(checkpoints, texts, settings, dataset, tokenizer, progress)


def score_checkpoints(
    checkpoints: Sequence[Checkpoint],
    texts: str | Sequence[str],
    settings: EvalSettings,
    dataset: dict[str, Any] | None = None,
    tokenizer: Any = None,
    progress: StageProgress | None = None,
) -> EvalReport:
    """evaluate_checkpoints on settings already checked (check_settings), as `uptrain eval` checks
    them at its door before it loads the text."""
    if not checkpoints:
        raise UptrainError("name at least one MODEL to evaluate")
    documents = [texts] if isinstance(texts, str) else list(texts)
    text = join_documents(documents)
    settings = resolve_window(settings, [c.config() for c in checkpoints])
    tokenizer, ids, covered = shared_tokens(checkpoints, text, settings.max_tokens, tokenizer)
    documents = documents_within(documents, covered, DOCUMENT_SEPARATOR)
    device = resolve_device(settings.device)
    results = []
    for checkpoint in checkpoints:
        model = checkpoint.load_model(settings.dtype, device)
        result = evaluate_model(checkpoint.name, model, tokenizer, ids, documents, settings, progress)
        results.append(replace(result, path=str(checkpoint.path)))
        del model
        gc.collect()
    return EvalReport(dataset or {}, settings, int(ids.numel()), _with_speedups(results))


def evaluate_models(
    models: dict[str, Any],
    tokenizer: Any,
    texts: str | Sequence[str],
    settings: EvalSettings | None = None,
    dataset: dict[str, Any] | None = None,
    progress: StageProgress | None = None,
) -> EvalReport:
    """The same report for models already in memory (name -> model), sharing one tokenizer."""
    settings = check_settings(settings or EvalSettings())
    documents = [texts] if isinstance(texts, str) else list(texts)
    settings = resolve_window(settings, [m.config for m in models.values()])
    ids, covered = shared_tokens([], join_documents(documents), settings.max_tokens, tokenizer)[1:]
    documents = documents_within(documents, covered, DOCUMENT_SEPARATOR)
    results = [
        evaluate_model(name, model, tokenizer, ids, documents, settings, progress)
        for name, model in models.items()
    ]
    return EvalReport(dataset or {}, settings, int(ids.numel()), _with_speedups(results))
