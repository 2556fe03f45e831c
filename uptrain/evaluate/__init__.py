"""Evaluation: perplexity before and after conversion, and the payoff of fewer KV heads.

Reusable API (train, run and push call these; the CLI `uptrain eval` is a thin layer over them):

- `perplexity(model, tokenizer, texts, window=None, stride=None, batch_size=4, max_tokens=None)`
  -> PerplexityResult(perplexity, nll, nll_sum, tokens_scored, tokens, windows, window, stride):
  the sliding-window method of the Hugging Face guide "Perplexity of fixed-length models", batched.
  `texts` is one string or documents joined with "\\n\\n". Window defaults to min(max positions,
  2048), stride to window // 2.
- `perplexity_of_ids(model, ids, window, stride, batch_size)`: the same on already tokenized ids;
  `perplexity_of_blocks(model, blocks, batch_size)`: rows of a 2-D tensor as independent windows
  (periodic held-out evaluation during training).
- `harness_metrics(model, tokenizer, documents, window, batch_size)` -> HarnessResult: lm_eval's
  rolling-loglikelihood metrics, each document scored on its own in disjoint windows after the
  BOS (else EOS) token; word_perplexity, byte_perplexity, bits_per_byte over the words and bytes of
  the original text. `documents` may be HarnessDocuments (uptrain.evaluate.documents:
  `harness_documents(texts, "wikitext")` scores lm_eval's wikitext-detokenized page and counts the
  original). Tested equal to lm_eval 0.4.13 on the same documents.
- `run_tasks(model, tokenizer, task_settings(settings))` (uptrain.evaluate.tasks): lm_eval tasks
  through `lm_eval.simple_evaluate` on an already loaded model -> {task: {metric: value}};
  `EvalSettings(tasks=TasksSection(names=["hellaswag", ...]))` runs them for every model of a report.
- `kv_cost(model, batch, context)` -> KVCost (measured bytes per token, and at batch x context);
  `decode_throughput(model, batch, context, new_tokens)` -> DecodeResult (greedy tokens/s with the
  KV cache; also used by scripts/bench_decode.py).
- `EvalSettings` (uptrain.config.evaluation, re-exported here): every setting, with its default and
  documentation, that `uptrain eval`'s options are generated from; `check_settings(settings)`
  (uptrain.evaluate.checks) checks them once, before anything is loaded.
- `evaluate_checkpoints([resolve_checkpoint(path), ...], texts, EvalSettings(...))` and
  `evaluate_models({name: model}, tokenizer, texts, EvalSettings(...))` -> EvalReport, several models
  on exactly the same tokens; `report.to_dict()` is JSON-able, `to_markdown(report)` is the table.
- `score_windows(model, ids, windows, batch_size)`: the batched core: the exact summed NLL of each
  `Window` (uptrain.evaluate.windows builds the guide's and the harness's windows).

How the guide's per-window averaging is handled: the guide weights each window's mean loss by
`valid labels - 1` because transformers shifts labels inside the model, so a window's first label
is never scored. That count is exact for a window without context (the first one, or every window
when stride == window), but one short for windows that begin with context, whose first target is
preceded by a masked token. Here every scored token's -log p is summed and divided by the number of
tokens actually scored, which is the guide's loop with that count corrected.
"""

from uptrain.checkpoint.positions import max_positions
from uptrain.evaluate.checkpoints import Checkpoint, resolve_checkpoint, shared_tokens
from uptrain.evaluate.checks import check_settings
from uptrain.evaluate.decode import DecodeResult, KVCost, decode_throughput, kv_cost
from uptrain.evaluate.harness import HarnessResult, harness_aggregate, harness_metrics
from uptrain.evaluate.report import (
    EvalReport,
    EvalSettings,
    ModelEvaluation,
    evaluate_checkpoints,
    evaluate_model,
    evaluate_models,
    score_checkpoints,
)
from uptrain.evaluate.scoring import WindowScores, score_windows
from uptrain.evaluate.table import report_table, to_markdown
from uptrain.evaluate.token_perplexity import (
    PerplexityResult,
    perplexity,
    perplexity_of_blocks,
    perplexity_of_ids,
    tokenize_text,
)
from uptrain.evaluate.windows import Window, rolling_windows, sliding_windows

__all__ = [
    "Checkpoint",
    "DecodeResult",
    "EvalReport",
    "EvalSettings",
    "HarnessResult",
    "KVCost",
    "ModelEvaluation",
    "PerplexityResult",
    "Window",
    "WindowScores",
    "check_settings",
    "decode_throughput",
    "evaluate_checkpoints",
    "evaluate_model",
    "evaluate_models",
    "harness_aggregate",
    "harness_metrics",
    "kv_cost",
    "max_positions",
    "perplexity",
    "perplexity_of_blocks",
    "perplexity_of_ids",
    "report_table",
    "resolve_checkpoint",
    "rolling_windows",
    "score_checkpoints",
    "score_windows",
    "shared_tokens",
    "sliding_windows",
    "to_markdown",
    "tokenize_text",
]
