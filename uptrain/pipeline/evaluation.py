"""The evaluation stages of `uptrain run`: source, converted and uptrained on exactly the same tokens.

The tokens are either the training run's held-out blocks (report.dataset null: the first eval.blocks
blocks of data.seq_len tokens, packed exactly as training packs them, so the three numbers sit on
the same scale as the held-out curve of metrics.jsonl), or the text of report.dataset, scored with
the sliding-window method of `uptrain eval`. One tokenizer reads the text for all three models: the
one training uses (model.tokenizer, else the converted checkpoint's). Each stage records the SHA-256
of its token ids, and the report checks that the three agree.
"""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from uptrain.checkpoint.devices import resolve_device
from uptrain.checkpoint.loading import load_causal_lm, load_tokenizer
from uptrain.config import DataSection, UptrainConfig
from uptrain.config.evaluation import shared_fields
from uptrain.data import DOCUMENT_SEPARATOR, TextSource, join_documents, load_documents
from uptrain.evaluate import EvalReport, EvalSettings, evaluate_model, tokenize_text
from uptrain.evaluate import tasks as evaluate_tasks
from uptrain.evaluate.continuations import greedy_continuations
from uptrain.evaluate.documents import documents_within
from uptrain.evaluate.report import resolve_window
from uptrain.evaluate.tasks import TaskSettings
from uptrain.train.corpus import load_corpus, text_source
from uptrain.train.run_dir import RunDir


@dataclass(frozen=True)
class EvalTokens:
    ids: torch.Tensor  # 1-D
    text: str  # the text they cover ("" for held-out blocks)
    settings: EvalSettings  # window/stride fixed for blocks; else resolved per model
    dataset: dict[str, Any]  # what the tokens are, for the report
    documents: tuple[str, ...] = ()  # the documents the tokens cover (harness metrics score each alone)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.ids.to(torch.int64).numpy().tobytes()).hexdigest()


def evaluation_inputs(cfg: UptrainConfig) -> dict[str, Any]:
    """What the evaluation stages read from the config (their manifests hash it)."""
    from uptrain.config.schema import to_plain

    report = {k: v for k, v in to_plain(cfg.report).items() if k != "plots"}
    inputs: dict[str, Any] = {"report": report, "tokenizer": cfg.model.tokenizer}
    if cfg.report.dataset is None:
        inputs["heldout"] = {"data": to_plain(cfg.data), "split": cfg.eval.split, "blocks": cfg.eval.blocks}
        if cfg.eval.dataset is not None:  # the held-out curve's own text
            inputs["heldout"]["dataset"] = to_plain(cfg.eval.dataset)
        if cfg.data.mix:  # a mixture's held-out blocks are drawn with train.seed
            inputs["heldout"]["seed"] = cfg.train.seed
    return inputs


def task_settings(cfg: UptrainConfig) -> TaskSettings:
    """report.tasks as the TaskSettings that every model of the run is scored with."""
    return evaluate_tasks.task_settings(cfg.report)


def _settings(cfg: UptrainConfig) -> EvalSettings:
    """The report section as the library's settings: the scoring fields they share taken as they are,
    what only `uptrain eval` measures (device, KV batch, decode speed) at its defaults."""
    return EvalSettings(**shared_fields(cfg.report, EvalSettings))


def evaluation_tokens(cfg: UptrainConfig, run: RunDir, tokenizer: Any) -> EvalTokens:
    """The tokens every model of the run is scored on."""
    settings = _settings(cfg)
    if cfg.report.dataset is None and cfg.eval.dataset is not None:  # the held-out curve's own text
        heldout = load_corpus(cfg.data, cfg.eval, tokenizer, run.data, cfg.train.seed).heldout_set()
        width = cfg.data.seq_len
        dataset = {
            "dataset": cfg.eval.dataset.dataset,
            "split": cfg.eval.dataset.split,
            "source": heldout.text,
        }
        settings = replace(settings, window=width, stride=max(1, width // 2), harness=False, max_tokens=None)
        return EvalTokens(heldout.ids, "", settings, dataset)
    if cfg.report.dataset is None:
        corpus = load_corpus(cfg.data, cfg.eval, tokenizer, run.data, cfg.train.seed)
        blocks = corpus.heldout
        width = int(blocks.shape[1])
        name = cfg.data.dataset or "the mixture of " + ", ".join(s.describe() for s in corpus.sources)
        is_local = bool(corpus.sources) or text_source(cfg.data, cfg.data.split, run.data).is_local
        dataset = {
            "dataset": name,
            "dataset_config": None if is_local else cfg.data.config,
            "split": cfg.eval.split or cfg.data.split,
            "source": f"{len(blocks)} held-out blocks of {width} tokens of {name}",
            "heldout_blocks": len(blocks),
        }
        settings = replace(settings, window=width, stride=width, harness=False, max_tokens=None)
        return EvalTokens(blocks.reshape(-1), "", settings, dataset)
    r = cfg.report
    data = DataSection(dataset=r.dataset, config=r.dataset_config, split=r.split, text_column=r.text_column)
    source: TextSource = text_source(data, r.split, run.data)
    documents = load_documents(source)
    ids, covered = tokenize_text(tokenizer, join_documents(documents), r.max_tokens)
    dataset = {
        "dataset": r.dataset,
        "dataset_config": None if source.is_local else r.dataset_config,
        "split": r.split,
        "source": source.describe(),
    }
    within = tuple(documents_within(documents, covered, DOCUMENT_SEPARATOR))
    return EvalTokens(ids, covered, settings, dataset, within)


def evaluate_checkpoint(
    role: str,
    path: Path,
    tokens: EvalTokens,
    tokenizer: Any,
    trust_remote_code: bool = False,
    prompts: Sequence[str] = (),
    continuation_tokens: int = 24,
) -> dict[str, Any]:
    """One model's evaluation as report.json holds it: EvalReport.to_dict() with the model's role,
    and the greedy continuation of each of `prompts`."""
    settings = tokens.settings
    device = resolve_device(settings.device)
    model = load_causal_lm(path, dtype=settings.dtype, device=device, trust_remote_code=trust_remote_code)
    try:
        settings = resolve_window(settings, [model.config])
        documents = list(tokens.documents) or tokens.text
        result = evaluate_model(role, model, tokenizer, tokens.ids, documents, settings)
        continuations = greedy_continuations(model, tokenizer, prompts, continuation_tokens)
    finally:
        del model
        gc.collect()
    report = EvalReport(tokens.dataset, settings, int(tokens.ids.numel()), [replace(result, path=str(path))])
    data = report.to_dict()
    data["models"][0]["role"] = role
    data["tokens_sha256"] = tokens.sha256
    if continuations:
        data["models"][0]["continuations"] = continuations
    return data


def run_tokenizer(cfg: UptrainConfig, converted: Path) -> Any:
    """The tokenizer training uses, which reads the evaluation text for all three models."""
    return load_tokenizer(cfg.model.tokenizer or converted, cfg.model.trust_remote_code)
