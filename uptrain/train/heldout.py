"""Held-out evaluation during training: perplexity of the held-out packed blocks, through the
evaluator's scoring core (uptrain.evaluate.score_windows).

Blocks are packed and unpadded, so each block is one window whose tokens after the first are
scored. Each process scores its share of the blocks; the per-block NLL sums are gathered with
`gather_for_metrics`, so the result does not depend on the number of processes.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from uptrain.evaluate import Window, score_windows
from uptrain.train.corpus import Corpus, heldout_loader


class HeldOutEvaluator:
    def __init__(self, corpus: Corpus, batch_size: int, accelerator: Any) -> None:
        self.accelerator = accelerator
        self.batch_size = batch_size
        self.loader = accelerator.prepare_data_loader(heldout_loader(corpus, batch_size))
        self.tokens = corpus.heldout.numel() - corpus.heldout.shape[0]  # predicted positions

    @torch.no_grad()
    def __call__(self, model: Any) -> dict[str, float]:
        """{"eval_loss": mean token NLL, "eval_ppl": its exp, "eval_tokens": positions scored}."""
        was_training = model.training
        model.eval()
        sums = []
        for batch in self.loader:
            ids = batch["input_ids"]
            width = ids.shape[1]
            windows = [
                Window(i * width, (i + 1) * width, i * width + 1, (i + 1) * width) for i in range(len(ids))
            ]
            scores = score_windows(model, ids.reshape(-1), windows, self.batch_size)
            nll = torch.tensor(scores.nll, dtype=torch.float64, device=ids.device)
            sums.append(self.accelerator.gather_for_metrics(nll))
        model.train(was_training)
        loss = (torch.cat(sums).sum() / self.tokens).item()
        return {"eval_loss": loss, "eval_ppl": math.exp(min(loss, 700.0)), "eval_tokens": self.tokens}
