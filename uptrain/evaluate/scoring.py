"""Batched forward passes that return the exact summed negative log-likelihood of each window.

Windows of the same input length are stacked into batches of `batch_size` (no padding, so nothing
changes what any position attends to). Only the last `max(logits_needed)` positions are projected
onto the vocabulary (`logits_to_keep`), and the cross-entropy is taken in float32 over chunks of
the scored positions only, so memory stays near one batch of logits. Sums are accumulated in float64.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any

import torch
import torch.nn.functional as F

from uptrain.evaluate.windows import Window

Progress = Callable[[int, int], None]  # (targets scored so far, total targets)

_ROWS_PER_CHUNK = 2048


@dataclass(frozen=True)
class WindowScores:
    nll: list[float]  # summed negative log-likelihood (nats) of each window's targets, in input order
    targets: list[int]  # how many targets each window scored

    @property
    def total_nll(self) -> float:
        return float(sum(self.nll))

    @property
    def total_targets(self) -> int:
        return sum(self.targets)


def model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


def accepts_logits_to_keep(model: Any) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def window_batches(windows: Sequence[Window], batch_size: int) -> list[list[int]]:
    """Indices of windows, grouped by input length (longest first), then chunked in order."""
    order = sorted(range(len(windows)), key=lambda i: (-windows[i].length, i))
    batches: list[list[int]] = []
    for _, group in groupby(order, key=lambda i: windows[i].length):
        members = list(group)
        batches += [members[i : i + batch_size] for i in range(0, len(members), batch_size)]
    return batches


def score_windows(
    model: Any,
    ids: torch.Tensor,
    windows: Sequence[Window],
    batch_size: int = 4,
    progress: Progress | None = None,
) -> WindowScores:
    """Summed negative log-likelihood of every window's targets under `model`, batched. The model
    runs in eval mode (no dropout) and is put back in training mode afterwards if it was in it."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    was_training = model.training
    model.eval()
    try:
        return _score(model, ids, windows, batch_size, progress)
    finally:
        model.train(was_training)


@torch.no_grad()  # not inference_mode: FSDP2 keeps the buffers it unshards into, and a training
def _score(  # step after a held-out evaluation must not find them marked as inference tensors
    model: Any, ids: torch.Tensor, windows: Sequence[Window], batch_size: int, progress: Progress | None
) -> WindowScores:
    ids = ids.reshape(-1).to(torch.long)
    device = model_device(model)
    use_keep = accepts_logits_to_keep(model)
    nll = [0.0] * len(windows)
    total = sum(w.targets for w in windows)
    done = 0
    for batch in window_batches(windows, batch_size):
        members = [windows[i] for i in batch]
        inputs = torch.stack([ids[w.begin : w.end] for w in members]).to(device)
        keep = max(w.logits_needed for w in members)
        kwargs = {"logits_to_keep": keep} if use_keep else {}
        logits = model(input_ids=inputs, use_cache=False, **kwargs).logits[:, -keep:, :]
        labels = torch.full((len(members), keep), -100, dtype=torch.long)
        for row, w in enumerate(members):
            first = keep - w.logits_needed  # logit column that predicts ids[w.target_begin]
            labels[row, first : first + w.targets] = ids[w.target_begin : w.target_end]
        sums = _summed_cross_entropy(logits, labels.to(device))
        for i, value in zip(batch, sums.tolist(), strict=True):
            nll[i] = value
        done += sum(w.targets for w in members)
        if progress is not None:
            progress(done, total)
        del logits
    return WindowScores(nll=nll, targets=[w.targets for w in windows])


def _summed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-row sums of -log p(label) in float64 over the positions whose label is not -100,
    computed in chunks of those positions only."""
    row, column = (labels != -100).nonzero(as_tuple=True)
    losses = torch.empty(row.shape, dtype=torch.float64, device=logits.device)
    for start in range(0, row.numel(), _ROWS_PER_CHUNK):
        part = slice(start, start + _ROWS_PER_CHUNK)
        picked = logits[row[part], column[part]].float()  # a copy of this chunk's rows only
        losses[part] = F.cross_entropy(picked, labels[row[part], column[part]], reduction="none")
    sums = torch.zeros(labels.shape[0], dtype=torch.float64, device=logits.device)
    return sums.index_add_(0, row, losses).cpu()
