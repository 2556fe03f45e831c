"""Build the tiny pretrained MHA reference model that scripts/ablations.py converts and uptrains.

    python scripts/build_reference_model.py [--wikitext ../shared/data/wikitext-2-valid-tokenized.txt] \
        [--out runs/reference] [--tokens 2M] [--threads 1]

Reproducible from its arguments (fixed seeds; the versions are recorded). Three stages, each skipped
when its output is already there, so an interrupted build resumes:

1. corpus (OUT/corpus.jsonl, one document a row, and OUT/corpus.json: sources, sizes, SHA-256): the
   WikiText-2 *validation* articles (--wikitext; the test split is the evaluation text and is never
   trained on), the Python documentation topics (pydoc_data) and the docstrings of the Python
   standard library's modules, classes and functions (read with `ast`, nothing imported; tests left
   out); documents shuffled with --seed;
2. tokenizer (OUT/tokenizer): a byte-level BPE of --vocab tokens trained on that corpus with the
   `tokenizers` library (no pre-trained vocabulary, no download);
3. pre-training (OUT/pretrain, an `uptrain train` run directory): a Llama with
   num_key_value_heads = num_attention_heads built from scratch (the config's model.tiny with
   model.tokenizer) and trained by uptrain's own loop for exactly --tokens tokens (rounded down to
   whole steps of batch x seq_len). uptrain.json in OUT/pretrain/final records `pretraining_tokens`
   (what `uptrain train` reads to size "5% of the original compute") and a `reference` section with
   the corpus, the command and the library versions.

The reference model is OUT/pretrain/final, an ordinary checkpoint for AutoModelForCausalLM.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import platform
import random
import re
import sysconfig
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WIKITEXT = ROOT.parent / "shared" / "data" / "wikitext-2-valid-tokenized.txt"

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>"]
SKIPPED_STDLIB_PARTS = {"test", "tests", "idlelib", "turtledemo", "site-packages", "lib2to3"}
_WIKI_TITLE = re.compile(r"^ = [^=].* = $")


def wikitext_articles(path: Path) -> list[str]:
    """The articles of a WikiText file, split at its top-level ` = Title = ` lines."""
    articles: list[list[str]] = []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if _WIKI_TITLE.match(line.rstrip("\n")) or not articles:
            articles.append([])
        articles[-1].append(line)
    return [text for text in ("".join(a).strip("\n") for a in articles) if text.strip()]


def pydoc_topics() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[key].strip() for key in sorted(topics) if topics[key].strip()]


def stdlib_docstrings(min_chars: int = 40) -> list[str]:
    """Docstrings of the standard library's modules, classes and functions, in file order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for path in sorted(root.rglob("*.py")):
        if SKIPPED_STDLIB_PARTS & set(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= min_chars:
                    docs.append(doc)
    return docs


def build_corpus(out: Path, wikitext: Path, seed: int, stdlib: bool = True) -> dict[str, Any]:
    """OUT/corpus.jsonl (shuffled documents) and OUT/corpus.json (its manifest); kept if present."""
    manifest_path = out / "corpus.json"
    if manifest_path.is_file() and (out / "corpus.jsonl").is_file():
        return json.loads(manifest_path.read_text())
    sources = {"wikitext-2-valid": wikitext_articles(wikitext), "pydoc-topics": pydoc_topics()}
    if stdlib:
        sources["stdlib-docstrings"] = stdlib_docstrings()
    rows = [{"text": text, "source": name} for name, texts in sources.items() for text in texts]
    random.Random(seed).shuffle(rows)
    body = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    manifest = {
        "file": "corpus.jsonl",
        "sha256": hashlib.sha256(body.encode()).hexdigest(),
        "seed": seed,
        "wikitext": {"path": str(wikitext), "sha256": hashlib.sha256(wikitext.read_bytes()).hexdigest()},
        "python": platform.python_version(),
        "sources": {
            name: {"documents": len(texts), "characters": sum(map(len, texts))}
            for name, texts in sources.items()
        },
    }
    from uptrain.checkpoint.atomic import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "corpus.jsonl", body)
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    return manifest


def train_tokenizer(out: Path, corpus: Path, vocab: int) -> Path:
    """A byte-level BPE trained on the corpus, saved for transformers (kept if present)."""
    target = out / "tokenizer"
    if (target / "tokenizer.json").is_file():
        return target
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from uptrain.checkpoint.atomic import atomic_directory

    texts = [json.loads(line)["text"] for line in corpus.read_text(encoding="utf-8").splitlines()]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    with atomic_directory(target, overwrite=True) as tmp:
        fast.save_pretrained(tmp)
    return target


def pretraining_config(args: argparse.Namespace, corpus: Path, tokenizer: Path) -> dict[str, Any]:
    """The `uptrain train` config that pre-trains the reference model from scratch."""
    return {
        "model": {
            "tiny": {
                "layers": args.layers,
                "hidden": args.hidden,
                "heads": args.heads,
                "intermediate": args.intermediate,
                "max_positions": args.seq_len,
                "seed": args.seed,
            },
            "tokenizer": str(tokenizer),
        },
        "data": {"dataset": str(corpus), "config": None, "text_column": "text", "seq_len": args.seq_len},
        "budget": {"max_tokens": args.tokens},
        "optim": {"lr": args.lr, "warmup": 0.05, "weight_decay": 0.1},
        "train": {
            "per_device_batch": args.batch,
            "mixed_precision": "no",
            "seed": args.seed,
            "cpu_threads": args.threads,
        },
        "eval": {"blocks": args.eval_blocks, "every_steps": args.eval_every},
        "checkpoint": {"every_steps": args.checkpoint_every, "keep_last": 1},
        "logging": {"every_steps": 25},
    }


def library_versions() -> dict[str, str]:
    import accelerate
    import datasets
    import tokenizers
    import torch
    import transformers

    from uptrain import __version__

    return {
        "python": platform.python_version(),
        "uptrain": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "datasets": datasets.__version__,
        "accelerate": accelerate.__version__,
        "platform": platform.platform(),
    }


def build_reference(args: argparse.Namespace) -> Path:
    """Run the three stages; returns the reference model's directory (OUT/pretrain/final)."""
    from uptrain.checkpoint.provenance import read_provenance, update_provenance
    from uptrain.config import parse_config
    from uptrain.pipeline.training import run_training

    out = Path(args.out).absolute()
    manifest = build_corpus(out, Path(args.wikitext), args.seed, stdlib=not args.no_stdlib)
    tokenizer = train_tokenizer(out, out / "corpus.jsonl", args.vocab)
    cfg = parse_config(pretraining_config(args, out / "corpus.jsonl", tokenizer))
    run = out / "pretrain"
    cfg.output = str(run)
    run_training(cfg, run, resume=run.exists())
    final = run / "final"
    if "reference" not in read_provenance(final):
        update_provenance(
            final,
            "reference",
            {
                "built_by": "scripts/build_reference_model.py",
                "arguments": {k: v for k, v in vars(args).items() if k not in ("out", "wikitext")},
                "corpus": manifest,
                "tokenizer_vocab": args.vocab,
                "versions": library_versions(),
            },
        )
    return final


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from uptrain.units import parse_tokens

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--wikitext",
        default=str(DEFAULT_WIKITEXT),
        help="WikiText-2 validation text (training text, not eval; default in ../shared/data/)",
    )
    p.add_argument("--out", default="runs/reference", help="output directory (default: runs/reference)")
    p.add_argument("--tokens", type=parse_tokens, default=parse_tokens("2M"), help="pre-training tokens")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--intermediate", type=int, default=384)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=8, help="blocks per step")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 suits a busy 2-core machine)")
    p.add_argument("--eval-blocks", type=int, default=32, help="held-out blocks of the corpus")
    p.add_argument("--eval-every", type=int, default=200, help="held-out evaluation every N steps")
    p.add_argument("--checkpoint-every", type=int, default=100, help="resumable checkpoint every N steps")
    p.add_argument("--no-stdlib", action="store_true", help="leave the stdlib docstrings out of the corpus")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    final = build_reference(args)
    record = json.loads((final / "uptrain.json").read_text())
    print(f"reference model: {final} ({record['pretraining_tokens']:,} pre-training tokens)")


if __name__ == "__main__":
    main()
