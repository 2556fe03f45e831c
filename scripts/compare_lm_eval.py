#!/usr/bin/env python
"""uptrain's harness metrics side by side with lm-evaluation-harness's, on the same documents.

    python scripts/compare_lm_eval.py MODEL_DIR --text ../shared/data/wikitext-2-raw-test.txt \
        --articles 3 --window 2048 [--out compare.json]

The first --articles articles of a WikiText raw text (split at its ` = Title = ` headings) are
written as a jsonl file, one document (`page`) per article. Then, raw and with the wikitext task's
treatment (detokenized page scored, words and bytes counted on the original):
  lm_eval   lm_eval.simple_evaluate(model="hf", pretrained=MODEL_DIR, max_length=--window) on a local
            loglikelihood_rolling task over that file (the wikitext treatment through the wikitext
            task's own detokenizer and process_results, imported from lm_eval);
  uptrain   `uptrain eval MODEL_DIR --dataset docs.jsonl --text-column page --window W
            [--detokenize wikitext] --json ...` in a subprocess.
Prints a Markdown table of word perplexity, byte perplexity and bits per byte with their relative
differences, and writes it as JSON with --out. Needs lm_eval (pip install 'uptrain-gqa[eval]').
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from uptrain.evaluate.documents import wikitext_articles

METRICS = ("word_perplexity", "byte_perplexity", "bits_per_byte")
TARGETS = {"none": '"{{page}}"', "wikitext": "!function utils.wikitext_detokenizer"}


def write_tasks(folder: Path, documents: Path) -> None:
    (folder / "utils.py").write_text(
        "from lm_eval.tasks.wikitext.preprocess_wikitext import process_results, wikitext_detokenizer\n"
    )
    for treatment, target in TARGETS.items():
        (folder / f"compare_{treatment}.yaml").write_text(
            f"task: compare_{treatment}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
            f"    test: {documents}\noutput_type: loglikelihood_rolling\ntest_split: test\n"
            f"doc_to_text: ''\ndoc_to_target: {target}\nprocess_results: !function utils.process_results\n"
            "metric_list:\n  - metric: word_perplexity\n  - metric: byte_perplexity\n"
            "  - metric: bits_per_byte\n"
        )


def lm_eval_side(model: str, tasks: Path, window: int, batch_size: int) -> dict[str, dict[str, float]]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    args = {"pretrained": model, "device": "cpu", "dtype": "float32", "max_length": window}
    out = lm_eval.simple_evaluate(
        model="hf",
        model_args=args,
        tasks=[f"compare_{t}" for t in TARGETS],
        batch_size=batch_size,
        task_manager=TaskManager(include_path=str(tasks), include_defaults=False),
    )
    return {t: {m: out["results"][f"compare_{t}"][f"{m},none"] for m in METRICS} for t in TARGETS}


def uptrain_side(model: str, documents: Path, window: int, batch_size: int, folder: Path) -> dict:
    results = {}
    for treatment in TARGETS:
        report = folder / f"uptrain-{treatment}.json"
        command = [sys.executable, "-m", "uptrain", "eval", model, "--dataset", str(documents)]
        command += ["--text-column", "page", "--window", str(window), "--batch-size", str(batch_size)]
        command += ["--device", "cpu", "--dtype", "fp32", "--detokenize", treatment, "--json", str(report)]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        model_report = json.loads(report.read_text())["models"][0]
        results[treatment] = {m: model_report[m] for m in METRICS}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model")
    parser.add_argument("--text", required=True, help="WikiText raw text file")
    parser.add_argument("--articles", type=int, default=3)
    parser.add_argument("--window", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    articles = wikitext_articles(Path(args.text).read_text(encoding="utf-8"))[: args.articles]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        documents = folder / "docs.jsonl"
        documents.write_text("".join(json.dumps({"page": a}) + "\n" for a in articles))
        write_tasks(folder, documents)
        theirs = lm_eval_side(args.model, folder, args.window, args.batch_size)
        ours = uptrain_side(args.model, documents, args.window, args.batch_size, folder)
    lines = ["| treatment | metric | uptrain | lm_eval | relative difference |", "|---|---|---:|---:|---:|"]
    for treatment in TARGETS:
        for metric in METRICS:
            a, b = ours[treatment][metric], theirs[treatment][metric]
            lines.append(f"| {treatment} | {metric} | {a:.8f} | {b:.8f} | {abs(a - b) / abs(b):.1e} |")
    print("\n".join(lines))
    if args.out:
        record = {
            "model": args.model,
            "articles": args.articles,
            "window": args.window,
            "uptrain": ours,
            "lm_eval": theirs,
        }
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
