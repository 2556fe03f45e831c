"""Held-out evaluation during training: perplexity of the held-out set (heldout_set.py: the carved
packed blocks, or eval.dataset's sliding windows), through the evaluator's scoring core
(uptrain.evaluate.score_windows).

Each process scores its share of the windows; the per-window NLL sums are gathered with
`gather_for_metrics`, so the result does not depend on the number of processes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.utils.data import DataLoader

from uptrain.evaluate import score_windows
from uptrain.train.corpus import Corpus


class HeldOutEvaluator:
    def __init__(self, corpus: Corpus, batch_size: int, accelerator: Any) -> None:
        self.accelerator = accelerator
        self.batch_size = batch_size
        self.heldout = corpus.heldout_set()
        indices = DataLoader(
            list(range(len(self.heldout.windows))),
            batch_size=batch_size,
            shuffle=False,
            collate_fn=torch.tensor,
            generator=torch.Generator().manual_seed(0),  # not torch's global RNG (see corpus._own_generator)
        )
        self.loader = accelerator.prepare_data_loader(indices)
        self.tokens = self.heldout.tokens_scored  # predicted positions

    @torch.no_grad()
    def __call__(self, model: Any) -> dict[str, float]:
        """{"eval_loss": mean token NLL, "eval_ppl": its exp, "eval_tokens": positions scored}."""
        was_training = model.training
        model.eval()
        sums = []
        for batch in self.loader:
            windows = [self.heldout.windows[i] for i in batch.tolist()]
            scores = score_windows(model, self.heldout.ids, windows, self.batch_size)
            nll = torch.tensor(scores.nll, dtype=torch.float64, device=batch.device)
            sums.append(self.accelerator.gather_for_metrics(nll))
        model.train(was_training)
        loss = (torch.cat(sums).sum() / self.tokens).item()
        return {"eval_loss": loss, "eval_ppl": math.exp(min(loss, 700.0)), "eval_tokens": self.tokens}
