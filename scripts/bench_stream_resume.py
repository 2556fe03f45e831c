"""Resuming a streamed dataset deep into itself: the time to the first batch after `--resume`, when the
loader skips the batches already trained on (what `uptrain train` did before the checkpoint kept the
stream's position) and when it loads the position and reads on.

    python scripts/bench_stream_resume.py --megabytes 300 --deep 0.9

It writes a .jsonl of about `--megabytes` MB of seeded random-word documents (a document a row, as a
Hub dataset streams), loads it streamed as `uptrain train` does (load_corpus, byte-level tokenizer:
one token a byte), and takes the position after `--deep` of its blocks. Then, each timed from nothing
loaded: "skip" builds the training loader and skips that many micro-batches with Accelerate's
skip_first_batches (tokenizing and packing every block before them); "position" loads the saved
position (as accelerator.load_state does) and reads on. Both must give the same first batch. The
model's load and the rest of `--resume` cost the same either way and are left out.
JSON in the format of scripts/bench_common.py.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_common import ROOT, Report, print_figures

from uptrain.checkpoint.offline import byte_level_tokenizer
from uptrain.config import DataSection, EvalSection
from uptrain.train.corpus import load_corpus, training_loader
from uptrain.train.streamed import StreamedBlocks

WORDS = np.array(
    [
        "the",
        "of",
        "and",
        "to",
        "in",
        "is",
        "was",
        "for",
        "on",
        "that",
        "with",
        "as",
        "by",
        "at",
        "from",
        "his",
        "an",
        "were",
        "are",
        "which",
    ]
)


def write_text(path: Path, megabytes: float, seed: int = 0) -> int:
    """Documents of 100-600 seeded random words, one JSON row each, until `megabytes`; their count."""
    rng, written, documents = np.random.default_rng(seed), 0, 0
    with path.open("w") as f:
        while written < megabytes * 1e6:
            words = WORDS[rng.integers(0, len(WORDS), rng.integers(100, 600))]
            line = json.dumps({"text": " ".join(words)}) + "\n"
            f.write(line)
            written, documents = written + len(line), documents + 1
    return documents


def first_batches(loader, started: float, n: int) -> tuple[torch.Tensor, float, float]:
    """The first batch, the seconds from `started` to it, and to the n-th (past the saved window)."""
    batches = iter(loader)
    batch = next(batches)["input_ids"]
    first_s = time.perf_counter() - started
    for _ in range(n - 1):
        next(batches)
    return batch, first_s, time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--megabytes", type=float, default=300)
    ap.add_argument("--deep", type=float, default=0.9, help="the share of the text trained on before")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--buffer", type=int, default=1000, help="data.shuffle_buffer, in blocks")
    ap.add_argument("--work", type=Path, help="where the text goes (default: a temporary folder)")
    ap.add_argument("--out", "--json", type=Path, default=ROOT / "runs" / "bench" / "stream_resume.json")
    args = ap.parse_args()
    settings = {k: getattr(args, k) for k in ("megabytes", "deep", "seq_len", "batch", "buffer")}
    report = Report("stream_resume", "resuming a stream deep into itself: skip vs saved position", settings)
    with tempfile.TemporaryDirectory(prefix="bench-stream-", dir=args.work) as tmp:
        work = Path(tmp)
        text = work / "text.jsonl"
        documents = write_text(text, args.megabytes)
        data = DataSection(dataset=str(text), seq_len=args.seq_len, streaming=True)
        tokenizer = byte_level_tokenizer()
        corpus = load_corpus(data, EvalSection(blocks=4), tokenizer, work / "data")
        blocks = int(text.stat().st_size / args.seq_len)  # about: a token a byte
        micro = int(blocks * args.deep) // args.batch
        past = args.buffer // args.batch + 1  # batches until one comes from the stream, not the window
        taken, samples = micro * args.batch, (micro + past) * args.batch
        # the position a checkpoint keeps after `taken` blocks (setup, not timed)
        first = StreamedBlocks(corpus.blocks, samples, 0, args.buffer)
        for _ in zip(range(taken), first, strict=False):
            pass
        torch.save(first.position(taken), work / "position.pkl")
        size = (work / "position.pkl").stat().st_size

        from accelerate import skip_first_batches

        started = time.perf_counter()
        skipping = training_loader(corpus, samples, args.batch, 0, args.buffer)
        skipped, skip_s, skip_past_s = first_batches(skip_first_batches(skipping, micro), started, past)
        started = time.perf_counter()
        loader = training_loader(corpus, samples, args.batch, 0, args.buffer)
        loader.dataset.resume = torch.load(work / "position.pkl", weights_only=False)
        resumed, position_s, position_past_s = first_batches(loader, started, past)
        assert torch.equal(skipped, resumed), "the two resumes disagree on the first batch"
    report.add("skip: seconds to the first batch", skip_s, "s")
    report.add("position: seconds to the first batch", position_s, "s")
    report.add(f"skip: seconds to batch {past} (past the saved window)", skip_past_s, "s")
    report.add(f"position: seconds to batch {past} (past the saved window)", position_past_s, "s")
    ratio = skip_past_s / position_past_s
    report.add(f"skip / position, to batch {past}", ratio, "x", ">= 10", ratio >= 10)
    report.data["details"] = {
        "documents": documents,
        "blocks_trained_before": taken,
        "tokens_trained_before": taken * args.seq_len,
        "position_file_bytes": size,
    }
    print_figures(report.write(args.out))


if __name__ == "__main__":
    main()
