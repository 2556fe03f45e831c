"""What `uptrain convert --plan` computes from: the model's sizes (read from config.json alone), the
conversion's settings, and how the calibration tokens fall into sequences and batches."""

from __future__ import annotations

import math
from dataclasses import dataclass

from uptrain.checkpoint.devices import COMPUTE_DTYPES
from uptrain.convert.calibration.stats import BATCH_TOKENS


@dataclass(frozen=True)
class ModelShape:
    """The sizes the plan needs, from config.json and the model transformers builds from it on the
    meta device (element counts, not bytes)."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    mlp_width: int  # the MLP's inner width (intermediate_size)
    layer_tensors: tuple[int, ...]  # every tensor of the largest decoder layer
    attention_params: int  # of which its attention's (q, k, v, o and their biases)
    embedding_params: int  # outside the decoder layers, less an untied output head
    largest_tensor: int  # the checkpoint's largest tensor
    source_bytes: int  # bytes an element of the checkpoint (config.json's dtype)

    @property
    def layer_params(self) -> int:
        return sum(self.layer_tensors)

    def converted_attention_params(self, groups: int) -> int:
        """The attention's parameters with `groups` KV heads instead of kv_heads."""
        return self.attention_params - 2 * (self.kv_heads - groups) * self.head_dim * self.hidden


@dataclass(frozen=True)
class PlanSettings:
    """The conversion's settings as the plan reads them (from the checked ConvertSection)."""

    groups: int
    calibrated: bool  # the method runs the calibration pass (not mean, first or random)
    merge: str  # mean, first, random, aligned or fit
    similar: bool
    refines: bool
    refine_steps: int
    keep_tokens: int  # calibration tokens kept for refine to replay (0 without refine)
    keep_batch_tokens: int  # a replay batch, one refine step
    tokens: int  # calibration_tokens
    seq_len: int  # calibration_seq_len
    sequential: bool
    device: str  # cpu or cuda: where the calibration pass and refine run
    compute_dtype: str  # the calibration pass's: fp32, bf16 or fp16
    output_bytes: int  # bytes an element of the output (--dtype, or the source's)

    @property
    def compute_bytes(self) -> int:
        return COMPUTE_DTYPES[self.compute_dtype].itemsize


@dataclass(frozen=True)
class Layout:
    """The calibration tokens as calibration_sequences and calibration_batches cut them, assuming the
    text holds at least `tokens` tokens."""

    seq_len: int  # T
    sequences: int
    kept_sequences: int
    batch_sequences: int  # in the largest batch
    kept_batch_sequences: int  # in a replay batch

    @property
    def tokens(self) -> int:
        return self.sequences * self.seq_len

    @property
    def batch_tokens(self) -> int:
        return self.batch_sequences * self.seq_len

    @property
    def kept_tokens(self) -> int:
        return self.kept_sequences * self.seq_len

    @property
    def kept_batch_tokens(self) -> int:
        return self.kept_batch_sequences * self.seq_len


def calibration_layout(settings: PlanSettings) -> Layout:
    t = min(settings.seq_len, settings.tokens)
    sequences = settings.tokens // t
    kept = min(sequences, math.ceil(settings.keep_tokens / t)) if settings.keep_tokens else 0
    per_batch = min(max(1, BATCH_TOKENS // t), sequences - kept)
    per_kept = min(max(1, settings.keep_batch_tokens // t), kept)
    return Layout(t, sequences, kept, max(per_batch, per_kept), per_kept)
