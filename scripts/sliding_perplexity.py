"""Sliding-window perplexity, as in the Hugging Face guide "Perplexity of fixed-length models".

A stand-in for `uptrain eval` (issue: eval) used by scripts/compare_methods.py until that lands:
windows of `window` tokens every `stride` tokens; each window scores only the tokens the previous
one did not, conditioned on up to `window - (new tokens)` tokens before them.

    python scripts/sliding_perplexity.py MODEL_DIR [--gguf-file F] [--tokens 16384]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

WIKITEXT_TEST = Path("/work/shared/data/wikitext-2-raw-test.txt")


def text_token_ids(tokenizer, path: Path, tokens: int | None) -> torch.Tensor:
    """The file read as one document, tokenized without special tokens added, cut to `tokens`."""
    ids = tokenizer(path.read_text(), add_special_tokens=False).input_ids
    return torch.tensor(ids[:tokens] if tokens else ids)


@torch.no_grad()
def sliding_perplexity(model, ids: torch.Tensor, window: int = 1024, stride: int = 512) -> float:
    """exp(mean NLL) over every token but the first, scored as the HF guide does."""
    nll_sum, scored, previous_end = 0.0, 0, 0
    n = ids.numel()
    for begin in range(0, n, stride):
        end = min(begin + window, n)
        new = end - previous_end  # tokens this window scores
        input_ids = ids[begin:end].unsqueeze(0)
        keep = min(new, end - begin - 1)  # the first token of the text has no prediction
        logits = model(input_ids=input_ids, logits_to_keep=keep + 1).logits[0, :-1].float()
        targets = input_ids[0, -keep:]
        loss = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
        nll_sum += loss.item()
        scored += keep
        previous_end = end
        if end == n:
            break
    return math.exp(nll_sum / scored)


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--gguf-file")
    parser.add_argument("--text", type=Path, default=WIKITEXT_TEST)
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--stride", type=int, default=512)
    args = parser.parse_args()
    kw = {"gguf_file": args.gguf_file} if args.gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(args.model, **kw)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, **kw).eval()
    ids = text_token_ids(tokenizer, args.text, args.tokens)
    start = time.perf_counter()
    ppl = sliding_perplexity(model, ids, args.window, args.stride)
    print(f"perplexity {ppl:.4f} on {ids.numel()} tokens ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
