"""The input pipeline alone: tokens/s that the training loader delivers (tokenize, pack, shuffle, mix,
collate) for a data.mix of two local sources, streamed and on disk, with the model's step a no-op.

    python scripts/bench_data.py --megabytes 50

It writes two .jsonl sources of about `--megabytes` MB each (seeded random-word documents, a document a
row), loads the mixture as `uptrain train` does (load_corpus with the byte-level tokenizer: one token a
byte; weights 0.7/0.3) and draws `--batches` batches through training_loader. On disk, the corpus is
tokenized once into the datasets cache (timed apart: "prepare") and the loop reads the seeded order;
streamed, tokenizing and packing happen as the loop reads. One process, the one the main process of a
run uses (num_proc unset). JSON in the format of scripts/bench_common.py.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench_common import ROOT, Report, print_figures
from bench_stream_resume import write_text

from uptrain.checkpoint.offline import byte_level_tokenizer
from uptrain.config import DataSection, EvalSection, MixSource
from uptrain.train.corpus import load_corpus, training_loader


def measure(sources: list[Path], streaming: bool, args: argparse.Namespace, work: Path) -> dict:
    mix = [MixSource(dataset=str(sources[0]), weight=0.7), MixSource(dataset=str(sources[1]), weight=0.3)]
    data = DataSection(dataset=None, mix=mix, seq_len=args.seq_len, streaming=streaming)
    started = time.perf_counter()
    corpus = load_corpus(data, EvalSection(blocks=4), byte_level_tokenizer(), work / "data", seed=0)
    samples = args.batches * args.batch
    loader = training_loader(corpus, samples, args.batch, seed=0, buffer=args.buffer)
    prepared = time.perf_counter()
    tokens = 0
    for batch in loader:  # the step: a no-op
        tokens += batch["input_ids"].numel()
    done = time.perf_counter()
    return {
        "tokens": tokens,
        "prepare_s": prepared - started,
        "loop_s": done - prepared,
        "loop_tokens_per_s": tokens / (done - prepared),
        "tokens_per_s": tokens / (done - started),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--megabytes", type=float, default=50, help="each source's size")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--batches", type=int, default=2000)
    ap.add_argument("--buffer", type=int, default=1000, help="data.shuffle_buffer, in blocks")
    ap.add_argument("--work", type=Path, help="where the text goes (default: a temporary folder)")
    ap.add_argument("--out", "--json", type=Path, default=ROOT / "runs" / "bench" / "data.json")
    args = ap.parse_args()
    settings = {k: getattr(args, k) for k in ("megabytes", "seq_len", "batch", "batches", "buffer")}
    report = Report("data", "input pipeline tokens/s: a two-source data.mix, no-op step", settings)
    with tempfile.TemporaryDirectory(prefix="bench-data-", dir=args.work) as tmp:
        work = Path(tmp)
        sources = [work / "one.jsonl", work / "two.jsonl"]
        for seed, path in enumerate(sources):
            write_text(path, args.megabytes, seed)
        results = {name: measure(sources, name == "streamed", args, work) for name in ("disk", "streamed")}
    for name, r in results.items():
        report.add(f"{name}: tokens/s, preparing included", r["tokens_per_s"], "tok/s")
        report.add(f"{name}: tokens/s in the loop", r["loop_tokens_per_s"], "tok/s")
    report.data["details"] = results
    print_figures(report.write(args.out))


if __name__ == "__main__":
    main()
