"""What a training run will need, before it starts: per-device memory and the compute of its budget.
Pure arithmetic on the model's shape (read from its config alone) and the config's settings.

Memory per device, in bytes, for AdamW with master weights in model.dtype (W bytes per parameter):
  weights     N * W / S           (S: the shard count; processes under FSDP / ZeRO-3, else 1); with
              train.lora N includes the adapters, peft's copies of modules trained in full add their
              size, and 4-bit weights take NF4_BYTES each
  gradients   N_t * W / S         (N_t: trainable parameters; DDP adds its gradient buckets, N_t * W)
  optimizer   2 * N_t * W / S     (AdamW's exp_avg and exp_avg_sq, in the parameters' dtype)
  gathered    FSDP with sharding: the root unit (embeddings, final norm, head; never resharded) and two
              decoder layers (the one running and the one prefetched) unsharded in the compute dtype,
              plus one layer's unsharded gradients; single/DDP with bf16 autocast: the bf16 copies of
              the matmul weights that autocast caches during the forward pass (2 bytes per parameter)
  activations what autograd keeps for backward of one micro-batch (activation_bytes below)
  teacher     distillation: the teacher's weights in the compute dtype, unsharded, on every device
Compute: 6 * N * tokens for the student (forward 2, backward 4), plus 2 * N_teacher * tokens for the
teacher's forward with distillation; gradient checkpointing recomputes the forward (another 2 * N *
tokens of hardware work, not counted in the model FLOPs).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

GIB = 1024**3
# bitsandbytes NF4 with double quantization: 4 bits, an 8-bit scale per 64 weights and an fp32 scale
# per 256 of those blocks
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
RESERVED = 2 * GIB  # CUDA context, cuBLAS workspaces and allocator fragmentation, assumed per GPU


@dataclass(frozen=True)
class ModelShape:
    params: int  # all parameters
    trainable: int  # those train.trainable selects (all by default)
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    layer_params: int  # parameters of one decoder layer
    root_params: int  # parameters outside the decoder layers (embeddings, final norm, head)
    # train.lora: peft's copies of the modules trained in full, held beside the frozen originals; and the
    # parameters held in 4-bit NF4 (load_in_4bit), included in `params`
    copies: int = 0
    quantized: int = 0


@dataclass(frozen=True)
class Parallelism:
    strategy: str  # "single", "ddp", "fsdp" (FULL_SHARD / reshard_after_forward) or "zero3"
    processes: int = 1  # in all (machines x GPUs per machine)
    machines: int = 1

    @property
    def shards(self) -> int:
        return self.processes if self.strategy in ("fsdp", "zero3") else 1


@dataclass(frozen=True)
class Settings:
    per_device_batch: int
    seq_len: int
    grad_accum: int
    weight_bytes: int  # model.dtype: 4 (fp32 master weights), 2 (bf16/fp16)
    mixed_precision: str  # "no", "bf16", "fp16"
    gradient_checkpointing: bool
    teacher_params: int = 0  # distillation: the teacher's parameter count (0: no teacher)
    teacher_vocab: int = 0


@dataclass(frozen=True)
class Regime:
    """Bytes per element of what the forward pass keeps, by how it computes."""

    activation: int  # linear outputs, attention, MLP
    residual: int  # the residual stream (a checkpointed layer's input)
    norm: int  # one RMSNorm (per hidden element): its fp32 input copy, normalised value and output
    norm_per_reader: int = 0  # autocast: each matmul reading a norm's fp32 output keeps its own bf16 copy

    def norms(self, readers: int) -> int:
        """Bytes per hidden element of a norm whose output `readers` matmuls read (q, k, v: 3)."""
        return self.norm + self.norm_per_reader * readers


def regime(settings: Settings, parallel: Parallelism) -> Regime:
    """fp32 throughout; bf16 parameters (FSDP2's mixed precision, or model.dtype bf16); or bf16 autocast
    over fp32 weights (single/DDP mixed precision), which keeps an fp32 residual stream, the norms'
    fp32 input and normalised value, and one bf16 copy of a norm's output per matmul that reads it."""
    half = settings.mixed_precision in ("bf16", "fp16") or settings.weight_bytes == 2
    if not half:
        return Regime(4, 4, 12)
    if parallel.strategy in ("fsdp", "zero3") or settings.weight_bytes == 2:
        return Regime(2, 2, 4 + 2 + 2)
    return Regime(2, 4, 4 + 4, norm_per_reader=2)


def layer_activation_bytes(m: ModelShape, batch: int, seq: int, r: Regime) -> int:
    """One Llama-style decoder layer's saved tensors (SDPA with a flash-style kernel, GQA native): two
    RMSNorms; the rotated q (h) and k (g*d) and v (g*d) that attention keeps; its output (h, which o_proj
    reads in place); gate, up, SiLU(gate) and their product (4 x intermediate); and the attention's
    log-sum-exp (fp32, one per head and position). RoPE keeps only cos and sin, shared by all layers."""
    gd = m.kv_heads * m.head_dim
    norms = (r.norms(3) + r.norms(2)) * m.hidden  # before attention (q, k, v) and the MLP (gate, up)
    per_token = norms + r.activation * (2 * m.hidden + 2 * gd + 4 * m.intermediate)
    return batch * seq * per_token + 4 * batch * m.heads * seq


def head_activation_bytes(m: ModelShape, batch: int, seq: int, r: Regime, teacher_vocab: int = 0) -> int:
    """The final norm, the logits (held by the output) and the cross-entropy's fp32 log-softmax; with
    distillation, the student's and the teacher's log-softmax at temperature T (fp32) and the teacher's
    logits."""
    tokens = batch * seq
    logits = tokens * m.vocab * (r.activation + 4)
    distill = tokens * teacher_vocab * (8 + r.activation) if teacher_vocab else 0
    return tokens * r.norms(1) * m.hidden + logits + distill


def activation_bytes(m: ModelShape, s: Settings, parallel: Parallelism, checkpointing: bool) -> int:
    """What one micro-batch's forward leaves for backward, at its peak. With gradient checkpointing only
    each layer's input is kept, and backward recomputes one layer at a time on top of it."""
    r = regime(s, parallel)
    b, seq = s.per_device_batch, s.seq_len
    layer = layer_activation_bytes(m, b, seq, r)
    head = head_activation_bytes(m, b, seq, r, s.teacher_vocab)
    if checkpointing:
        return m.layers * b * seq * m.hidden * r.residual + layer + head
    return m.layers * layer + head


@dataclass(frozen=True)
class MemoryPlan:
    weights: int
    gradients: int
    optimizer: int
    gathered: int
    activations: int  # with the config's gradient_checkpointing setting
    activations_without: int  # without gradient checkpointing
    activations_with: int  # with gradient checkpointing
    teacher: int

    @property
    def total(self) -> int:
        return (
            self.weights + self.gradients + self.optimizer + self.gathered + self.activations + self.teacher
        )


def plan_memory(m: ModelShape, s: Settings, parallel: Parallelism) -> MemoryPlan:
    shards, w = parallel.shards, s.weight_bytes
    half = 2 if s.mixed_precision in ("bf16", "fp16") else w
    gradients = m.trainable * w // shards
    if parallel.strategy == "ddp":
        gradients += m.trainable * w  # DDP's bucket copy of the gradients
    if parallel.strategy in ("fsdp", "zero3") and shards > 1:
        gathered = (m.root_params + 2 * m.layer_params) * half + m.layer_params * half
    elif half < w:  # autocast's bf16 copies: all but the embedding (4-bit weights are dequantized per use)
        gathered = (m.params - m.vocab * m.hidden - m.quantized) * 2
    else:
        gathered = 0
    without = activation_bytes(m, s, parallel, False)
    with_ = activation_bytes(m, s, parallel, True)
    return MemoryPlan(
        weights=int((m.params - m.quantized + m.copies) * w + m.quantized * NF4_BYTES) // shards,
        gradients=gradients,
        optimizer=2 * m.trainable * w // shards,
        gathered=gathered,
        activations=with_ if s.gradient_checkpointing else without,
        activations_without=without,
        activations_with=with_,
        teacher=s.teacher_params * half,
    )


@dataclass(frozen=True)
class ComputePlan:
    tokens_per_step: int
    steps: int
    tokens: int
    flops: float  # model FLOPs: 6 N tokens (+ 2 N_teacher tokens)
    recompute_flops: float  # gradient checkpointing's extra forward (hardware work), 0 without


def plan_compute(m: ModelShape, s: Settings, per_step: int, steps: int) -> ComputePlan:
    """The work of `steps` optimizer steps of `per_step` tokens (budget.tokens_per_step, computed once)."""
    tokens = steps * per_step
    flops = 6.0 * m.params * tokens + 2.0 * s.teacher_params * tokens
    recompute = 2.0 * m.params * tokens if s.gradient_checkpointing else 0.0
    return ComputePlan(per_step, steps, tokens, flops, recompute)


@dataclass
class Verdict:
    fits: bool | None  # None: the device memory is unknown
    usable: int | None  # device memory less RESERVED
    advice: list[str] = field(default_factory=list)  # knobs that would make it fit, each with its total


def _fit(total: int, usable: int) -> bool:
    return total <= usable


def judge(m: ModelShape, s: Settings, parallel: Parallelism, device_memory: int | None) -> Verdict:
    """Whether plan_memory fits `device_memory` (bytes per device), and if not, which single change
    would make it fit: gradient checkpointing, a smaller micro-batch (same global batch), FSDP, or
    more devices."""
    if device_memory is None:
        return Verdict(None, None)
    usable = device_memory - RESERVED
    if _fit(plan_memory(m, s, parallel).total, usable):
        return Verdict(True, usable)
    advice = []

    def total(s2: Settings = s, p2: Parallelism = parallel) -> int:
        return plan_memory(m, s2, p2).total

    if not s.gradient_checkpointing and _fit(total(replace(s, gradient_checkpointing=True)), usable):
        advice.append("set train.gradient_checkpointing=true")
    b = s.per_device_batch
    while b > 1:
        b //= 2
        smaller = replace(s, per_device_batch=b, grad_accum=s.grad_accum * (s.per_device_batch // b))
        if _fit(total(smaller), usable):
            accum = smaller.grad_accum
            advice.append(f"set train.per_device_batch={b} and train.grad_accum={accum} (same global batch)")
            break
    if parallel.strategy in ("single", "ddp") and parallel.processes > 1:
        sharded = replace(parallel, strategy="fsdp")
        if _fit(total(p2=sharded), usable):
            advice.append("shard with FSDP2: accelerate launch --config_file configs/accelerate/fsdp.yaml")
    if parallel.strategy in ("fsdp", "zero3") or parallel.processes == 1:
        for n in (2, 4, 8, 16, 32, 64, 128, 256):
            if n > parallel.processes and _fit(total(p2=Parallelism("fsdp", n, max(1, n // 8))), usable):
                advice.append(
                    f"shard over {n} GPUs with FSDP2 (configs/accelerate/fsdp.yaml, multi-node.yaml)"
                )
                break
    return Verdict(False, usable, advice)
