"""The calibration pass: run the source model on calibration text and keep, per layer, only what
the calibrated methods need.

Forward pre-hooks on every layer's attention module see its input x (after the input norm) and
accumulate E[x~ x~^T] with x~ = [x; 1] in float64: (hidden+1)^2 numbers per layer, whatever the
token count. Query, key and value statistics all follow from it and the weights (metric.py). For
`refine`, the attention inputs of the first `keep_tokens` tokens are kept as they are, with the
other arguments the module got (RoPE cos/sin, mask), so it can be replayed layer by layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from uptrain.architectures import Architecture, AttentionDims, get_architecture, read_dims
from uptrain.convert.attention_modules import AttentionModules
from uptrain.convert.checkpoint import MemoryShard, SourceCheckpoint
from uptrain.data import TextSource, join_documents, load_documents
from uptrain.errors import UptrainError
from uptrain.models import load_causal_lm, load_tokenizer

DEFAULT_CALIBRATION = TextSource(split="train")  # WikiText-2 raw, train split
BATCH_TOKENS = 2048  # tokens per forward pass
_NOT_REPLAYED = ("past_key_values", "past_key_value")


@dataclass(frozen=True)
class CalibrationSpec:
    data: TextSource = DEFAULT_CALIBRATION
    tokens: int = 4096  # tokens whose statistics are accumulated
    seq_len: int = 512  # calibration text is cut into sequences of this many tokens
    keep_tokens: int = 0  # of those, how many tokens of attention inputs are kept for `refine`

    def record(self) -> dict[str, Any]:
        return {"data": self.data.describe(), "tokens": self.tokens, "seq_len": self.seq_len}


@dataclass
class ReplayBatch:
    """One batch of a layer's attention inputs, as the module was called."""

    hidden_states: torch.Tensor  # (batch, seq, hidden) float32
    kwargs: dict[str, Any]  # position_embeddings, attention_mask, ...


@dataclass
class LayerCalibration:
    second_moment: torch.Tensor  # (in + 1, in + 1) float64: E[x~ x~^T], x~ = [x; 1]
    tokens: int
    rope: str  # the table's RoPE pairing: half, interleaved or none
    rotary_dim: int  # head dims RoPE rotates (partial rotary: fewer than head_dim)
    keys_normalized: bool  # a norm follows k_proj (the table's qk_norm, on in this config)
    replay: list[ReplayBatch] = field(default_factory=list)
    modules: AttentionModules | None = None
    cache: dict[str, Any] = field(default_factory=dict, repr=False)  # derived data (factors)


def calibration_token_ids(tokenizer: Any, data: TextSource, tokens: int) -> torch.Tensor:
    """The first `tokens` tokens of the documents joined (no special tokens added)."""
    documents = load_documents(data)
    taken, chars = [], 0
    for doc in documents:  # tokenize only about as much text as needed (~4 characters a token)
        taken.append(doc)
        chars += len(doc)
        if chars > 8 * tokens:
            break
    ids = tokenizer(join_documents(taken), add_special_tokens=False).input_ids
    return torch.tensor(ids[:tokens], dtype=torch.long)


def load_source_model(source: SourceCheckpoint) -> Any:
    """The source as a float32 transformers model; weights already in memory (GGUF) are reused."""
    if any(isinstance(s, MemoryShard) for s in source.shards):
        from transformers import AutoConfig
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

        config = AutoConfig.from_pretrained(str(source.root))
        state = {name: source.load(name).to(torch.float32) for name in source.names()}
        model_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
        return model_class.from_pretrained(None, config=config, state_dict=state, dtype=torch.float32).eval()
    return load_causal_lm(source.model_path, dtype=torch.float32)


class _LayerAccumulator:
    def __init__(self, hidden: int) -> None:
        self.xx = torch.zeros(hidden, hidden, dtype=torch.float64)
        self.x = torch.zeros(hidden, dtype=torch.float64)
        self.count = 0
        self.rotary_dim: int | None = None
        self.replay: list[ReplayBatch] = []
        self.keep = False

    def __call__(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        flat = hidden.detach().reshape(-1, hidden.shape[-1]).to(torch.float32)
        self.xx += (flat.T @ flat).double()
        self.x += flat.sum(0).double()
        self.count += flat.shape[0]
        if self.rotary_dim is None:
            cos = (kwargs.get("position_embeddings") or (None,))[0]
            self.rotary_dim = 0 if cos is None else int(cos.shape[-1])
        if self.keep:
            rest = {k: v for k, v in kwargs.items() if k != "hidden_states" and k not in _NOT_REPLAYED}
            self.replay.append(ReplayBatch(hidden.detach().to(torch.float32).clone(), rest))

    def second_moment(self) -> torch.Tensor:
        n = self.xx.shape[0]
        s = torch.empty(n + 1, n + 1, dtype=torch.float64)
        s[:n, :n], s[:n, n], s[n, :n], s[n, n] = self.xx, self.x, self.x, self.count
        return s / self.count


@torch.no_grad()
def collect_statistics(
    model: Any,
    arch: Architecture,
    dims: AttentionDims,
    config: dict,
    sequences: torch.Tensor,
    keep_sequences: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[int, LayerCalibration]:
    """Run `model` on `sequences` (N, T) and return each layer's calibration. The first
    `keep_sequences` sequences' attention inputs are kept for replay."""
    accumulators = [_LayerAccumulator(dims.hidden) for _ in range(dims.layers)]
    handles = [
        model.get_submodule(arch.prefix(i)).register_forward_pre_hook(acc, with_kwargs=True)
        for i, acc in enumerate(accumulators)
    ]
    per_batch = max(1, BATCH_TOKENS // sequences.shape[1])
    starts = list(range(0, keep_sequences, per_batch)) + list(
        range(keep_sequences, len(sequences), per_batch)
    )
    try:
        for done, start in enumerate(starts):
            end = min(start + per_batch, keep_sequences if start < keep_sequences else len(sequences))
            for acc in accumulators:
                acc.keep = start < keep_sequences
            model(input_ids=sequences[start:end], use_cache=False, logits_to_keep=1)
            if progress:
                progress(done + 1, len(starts))
    finally:
        for handle in handles:
            handle.remove()
    normalized = arch.normalizes_keys(config)
    return {
        i: LayerCalibration(
            second_moment=acc.second_moment(),
            tokens=acc.count,
            rope=arch.rope,
            rotary_dim=0 if arch.rope == "none" else (acc.rotary_dim or 0),
            keys_normalized=normalized,
            replay=acc.replay,
            modules=AttentionModules.of(model, arch, dims, i),
        )
        for i, acc in enumerate(accumulators)
    }


def collect_calibration(
    source: SourceCheckpoint, spec: CalibrationSpec, progress: Callable[[int, int], None] | None = None
) -> dict[int, LayerCalibration]:
    """Tokenize the calibration text with the source's tokenizer and collect every layer's
    calibration from the source model."""
    if spec.tokens < 1 or spec.seq_len < 2:
        raise UptrainError("--calibration-tokens must be at least 1 and --calibration-seq-len at least 2")
    arch = get_architecture(source.config.get("model_type"))
    dims = read_dims(arch, source.config)
    tokenizer = load_tokenizer(source.root or source.model_path)
    ids = calibration_token_ids(tokenizer, spec.data, spec.tokens)
    seq_len = min(spec.seq_len, len(ids))
    if seq_len < 2:
        raise UptrainError(f"{spec.data.describe()} has too little text to calibrate on; pass more text")
    sequences = ids[: len(ids) // seq_len * seq_len].reshape(-1, seq_len)
    keep = min(len(sequences), math.ceil(spec.keep_tokens / seq_len)) if spec.keep_tokens else 0
    model = load_source_model(source)
    return collect_statistics(model, arch, dims, source.config, sequences, keep, progress)
