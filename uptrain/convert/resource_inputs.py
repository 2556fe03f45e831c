"""What `uptrain convert --plan` sets its arithmetic against, gathered without reading a weight: the
model's sizes (config.json, and the model transformers builds from it on the meta device), the checked
settings, this process's resident memory once it has imported what the conversion imports, and the
achieved throughput of a matrix product measured here in a fraction of a second."""

from __future__ import annotations

import os
import resource
import sys
import time
from typing import Any

import torch

from uptrain.architectures import Route, plan_route
from uptrain.checkpoint.devices import COMPUTE_DTYPES
from uptrain.checkpoint.dtypes import DTYPES, TORCH_DTYPES
from uptrain.checkpoint.meta import fetch_config, meta_model
from uptrain.config.methods import Refine, Similar
from uptrain.convert.calibration.stats import BATCH_TOKENS
from uptrain.convert.checked import CheckedConversion
from uptrain.convert.resource_plan import ModelShape, PlanSettings, ResourcePlan, Throughput, plan_resources
from uptrain.errors import UptrainError

PROBE_SECONDS = 0.1  # each throughput probe runs about this long, after one warm-up product
PROBE_SIZE = 1024  # the CPU probes' largest dimension (a product of 2 x 2048 x 1024^2 FLOPs at most)


def _config(src: str, checked: CheckedConversion) -> dict:
    settings = checked.settings
    if src.endswith(".gguf") or settings.gguf_file:
        raise UptrainError(
            "--plan reads SRC's config.json and a .gguf file has none; plan a model directory or Hub id"
        )
    return fetch_config(src, settings.revision)


def _text_config(config: dict) -> dict:
    return config.get("text_config") or config


def model_shape(config: dict, route: Route) -> ModelShape:
    """The sizes of the model `config` describes, from its meta-device model."""
    model = meta_model(config)
    if model is None:
        raise UptrainError(f"--plan needs transformers' class for model_type {config.get('model_type')!r}")
    arch, dims = route.source, route.dims
    decoders = [model.get_submodule(arch.prefix(i).rsplit(".", 1)[0]) for i in range(dims.layers)]
    largest = max(decoders, key=lambda d: sum(p.numel() for p in d.parameters()))
    index = decoders.index(largest)
    attention = model.get_submodule(arch.prefix(index))
    in_layers = {id(p) for d in decoders for p in d.parameters()}
    head, tied = model.get_output_embeddings(), model.get_input_embeddings()
    in_head = set() if head is None or head is tied else {id(p) for p in head.parameters()}
    params = list(model.parameters())
    text = _text_config(config)
    dtype = TORCH_DTYPES.get(
        str(config.get("dtype") or config.get("torch_dtype") or "float32"), torch.float32
    )
    return ModelShape(
        layers=dims.layers,
        hidden=dims.hidden,
        heads=dims.heads,
        kv_heads=dims.kv_heads,
        head_dim=dims.head_dim,
        mlp_width=int(text.get("intermediate_size") or text.get("n_inner") or 4 * dims.hidden),
        layer_tensors=tuple(p.numel() for p in largest.parameters()),
        attention_params=sum(p.numel() for p in attention.parameters()),
        embedding_params=sum(p.numel() for p in params if id(p) not in in_layers | in_head),
        largest_tensor=max(p.numel() for p in params),
        source_bytes=dtype.itemsize,
    )


def plan_settings(checked: CheckedConversion, shape: ModelShape) -> PlanSettings:
    steps, spec, settings = checked.steps, checked.calibration, checked.settings
    refine: Refine | None = steps.find(Refine)
    output = DTYPES[settings.dtype].itemsize if settings.dtype else shape.source_bytes
    return PlanSettings(
        groups=checked.groups,
        calibrated=spec is not None,
        merge=steps.merge.name,
        similar=steps.find(Similar) is not None,
        refines=refine is not None,
        refine_steps=refine.steps if refine else 0,
        keep_tokens=spec.keep_tokens if spec else 0,
        keep_batch_tokens=spec.keep_batch_tokens if spec else 1,
        tokens=spec.tokens if spec else 1,
        seq_len=spec.seq_len if spec else 2,
        sequential=bool(spec and spec.sequential),
        device="cuda" if spec and spec.device.startswith("cuda") else "cpu",
        compute_dtype=spec.dtype if spec else "fp32",
        output_bytes=output,
    )


def resident_bytes() -> int:
    """This process's resident memory now (Linux), or its peak so far elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def process_baseline(calibrated: bool) -> int:
    """Resident memory once this process has imported what the conversion imports: torch and
    transformers (the meta model is built), and for a calibrated method the tokenizer classes, the
    datasets library that reads the calibration text, and accelerate."""
    if calibrated:
        import accelerate  # noqa: F401
        import datasets  # noqa: F401
        from transformers import AutoTokenizer  # noqa: F401
    return resident_bytes()


def _rate(m: int, k: int, n: int, dtype: torch.dtype, device: torch.device) -> float:
    """Achieved FLOP/s of an (m, k) x (k, n) product in `dtype` on `device`."""
    a = torch.randn(m, k, device=device).to(dtype)
    b = torch.randn(k, n, device=device).to(dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    a @ b  # warm-up: kernel choice, thread pool, first-touch pages
    sync()
    start, reps = time.perf_counter(), 0
    while reps < 1000 and (elapsed := time.perf_counter() - start) < PROBE_SECONDS:
        a @ b
        sync()
        reps += 1
    return 2.0 * m * k * n * reps / max(elapsed, 1e-9)


def measure_throughput(settings: PlanSettings, shape: ModelShape, device: str) -> Throughput:
    """The forward pass's matrix products: (tokens of a batch, hidden) x (hidden, hidden) in the compute
    dtype on the calibration device (on the CPU at most PROBE_SIZE each way, and 2048 rows), and the
    merge's: a float64 square product on the CPU of at most PROBE_SIZE."""
    dtype = COMPUTE_DTYPES[settings.compute_dtype]
    on = torch.device(device)
    k = shape.hidden if on.type == "cuda" else min(shape.hidden, PROBE_SIZE)
    m = min(BATCH_TOKENS, settings.tokens) if on.type == "cuda" else min(BATCH_TOKENS, settings.tokens, 2 * k)
    k64 = min(shape.hidden + 1, PROBE_SIZE)
    compute = _rate(m, k, k, dtype, on)
    float64 = _rate(k64, k64, k64, torch.float64, torch.device("cpu"))
    threads = torch.get_num_threads()
    words = f"{settings.compute_dtype} {m}x{k} @ {k}x{k} on {device}; float64 {k64}^3, {threads} threads"
    return Throughput(compute, float64, words)


def gather_plan(src: str, checked: CheckedConversion) -> ResourcePlan:
    """The plan of `uptrain convert SRC ... --plan`: nothing but config.json is read, nothing written."""
    config = _config(src, checked)
    route = plan_route(config, checked.groups)
    shape = model_shape(config, route)
    settings = plan_settings(checked, shape)
    spec = checked.calibration
    device = spec.device if spec else "cpu"
    throughput: Any = None
    if settings.calibrated and device.startswith("cuda"):
        throughput = measure_throughput(settings, shape, device)  # CUDA's host memory joins the baseline
    baseline = process_baseline(settings.calibrated)
    if settings.calibrated and throughput is None:
        throughput = measure_throughput(settings, shape, device)
    return plan_resources(shape, settings, baseline, throughput)


__all__ = ["gather_plan"]
