#!/usr/bin/env python
"""Seconds per layer of `fit`'s math (no calibration forward pass), at the hidden sizes users convert.

    python scripts/bench_fit_math.py                          # hidden 2048, 4096, 8192
    python scripts/bench_fit_math.py --tiny                   # hidden 256, for tests

Each size gets one layer's problem as a conversion hands it to the method: random weights with
realistic head counts (16 heads of 128 at 2048 -> 4 KV heads, 32 of 128 at 4096 -> 8, 64 of 128
at 8192 -> 8; MHA sources) and random well-conditioned second moments of the attention inputs and of
their attention mixes, (hidden + 1)^2 float64 like calibration's (a decaying spectrum of scales, a
low-rank correlated part and a mean). What is timed is `build_method("fit").convert_layer` with a
report (so the calibrated error that conversions note for every layer is included), factoring the
second moments afresh each repeat, as each layer of a conversion does, after one small warm-up
layer (the first call of a LAPACK routine loads it). Medians over --repeats.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from pathlib import Path

from bench_common import ROOT, Report, print_figures

SHAPES = {2048: (16, 4), 4096: (32, 8), 8192: (64, 8)}  # hidden -> heads (of 128), target KV heads
TARGET_4096_S = 60.0
EMULATION = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")


def second_moment(hidden: int, seed: int, scale: float = 1.0):  # noqa: ANN201 - torch is imported late
    """E[x~ x~^T] for x~ = [x; 1]: x has per-feature scales from 0.1 to 10 (outlier features), a
    rank-64 correlated part and a mean; well conditioned by construction."""
    import torch

    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-1, 1, hidden, dtype=torch.float64)[torch.randperm(hidden, generator=g)]
    u = torch.randn(hidden, 64, generator=g, dtype=torch.float64) / 8
    cov = u @ u.T
    cov.diagonal().add_(1.0)
    cov = cov * scales[:, None] * scales[None, :] * scale
    mean = torch.randn(hidden, generator=g, dtype=torch.float64) * scales * 0.3
    s = torch.empty(hidden + 1, hidden + 1, dtype=torch.float64)
    s[:hidden, :hidden] = cov + torch.outer(mean, mean)
    s[:hidden, hidden] = s[hidden, :hidden] = mean
    s[hidden, hidden] = 1.0
    return s


def layer_problem(hidden: int, heads: int, head_dim: int, seed: int = 0):  # noqa: ANN201
    """(AttentionWeights, LayerCalibration, MethodContext) of one random MHA Llama layer."""
    import torch

    from uptrain.architectures import AttentionDims, AttentionWeights, get_architecture
    from uptrain.convert.calibration.stats import LayerCalibration
    from uptrain.convert.methods.base import MethodContext

    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=g) / hidden**0.5  # noqa: E731
    attn = AttentionWeights(
        q=rand(heads, head_dim, hidden),
        k=rand(heads, head_dim, hidden),
        v=rand(heads, head_dim, hidden),
        o=rand(hidden, heads, head_dim),
    )
    cal = LayerCalibration(
        second_moment=second_moment(hidden, seed + 1),
        mixed_moment=second_moment(hidden, seed + 2, scale=0.3),
        tokens=4096,
        rope="half",
        rotary_dim=head_dim,
        keys_normalized=False,
    )
    arch = get_architecture("llama")
    dims = AttentionDims(layers=1, hidden=hidden, heads=heads, kv_heads=heads, head_dim=head_dim)
    return attn, cal, MethodContext(arch=arch, dims=dims, layer=0, calibration=cal)


def time_layer(hidden: int, heads: int, groups: int, repeats: int) -> list[float]:
    import dataclasses

    from uptrain.convert.methods.pipeline import build_method

    attn, cal, ctx = layer_problem(hidden, heads, hidden // heads)
    convert_layer = build_method("fit").convert_layer
    times = []
    for _ in range(repeats):
        cal.cache.clear()  # each layer factors its own moments
        run_ctx = dataclasses.replace(ctx, report={})
        t0 = time.perf_counter()
        convert_layer(attn, groups, run_ctx)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, nargs="+", default=sorted(SHAPES))
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--tiny", action="store_true", help="small sizes, for tests")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "fit_math.json")
    args = ap.parse_args()

    import torch

    if args.tiny:
        args.hidden = [256]
    if args.threads:
        torch.set_num_threads(args.threads)
    report = Report(
        "fit_math",
        "fit's math per layer (no forward pass): seconds at each hidden size",
        {
            "hidden": args.hidden,
            "repeats": args.repeats,
            "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # avx2 under the AVX2 emulation
            "emulation": {k: os.environ[k] for k in EMULATION if k in os.environ},
        },
    )
    time_layer(256, 2, 1, 1)  # warm-up: the first call of each LAPACK routine loads it (about 1 s)
    per_size = {}
    for hidden in args.hidden:
        heads, groups = SHAPES.get(hidden, (max(2, hidden // 128), max(1, hidden // 512)))
        times = time_layer(hidden, heads, groups, args.repeats)
        per_size[hidden] = {"heads": heads, "head_dim": hidden // heads, "groups": groups, "times_s": times}
        median = statistics.median(times)
        target = f"<= {TARGET_4096_S:g}" if hidden == 4096 else None
        met = median <= TARGET_4096_S if hidden == 4096 else None
        note = f"{heads} heads of {hidden // heads} -> {groups} KV heads"
        report.add(f"fit math per layer, hidden {hidden}", median, "s", target, met, note)
        print(f"hidden {hidden}: {median:.2f} s per layer ({note})", flush=True)
    report.data["details"]["per_size"] = per_size
    report.data["details"]["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print_figures(report.write(args.out))


if __name__ == "__main__":
    main()
