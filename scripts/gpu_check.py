#!/usr/bin/env python
"""The GPU check: uptraining a ~1B-parameter MHA Llama converted to G = H/4 on one GPU, in bf16.

    python scripts/gpu_check.py                       # one GPU, under 8 minutes (not yet timed on one)
    python scripts/gpu_check.py --peak-tflops 989     # a device the peak table below does not know
    python scripts/gpu_check.py --tiny                # a miniature on CPU: what CI runs so it cannot rot

The model is a random Llama built from its config (nothing downloaded): 22 layers, hidden 2048, 32 heads
(MHA), MLP 5461, about 1.1B parameters; training uses its conversion to 8 KV heads. Measured, each
comparison side by side in one run, JSON in the format of scripts/bench_common.py and a section of
docs/BENCHMARKS.md named after the device:
  - tokens/s of `uptrain train` against Hugging Face's Trainer, same model, data, batch, seq_len, bf16
    (scripts/bench_train.py), and uptrain's model FLOPs utilisation: tokens/s x 6 N / the bf16 peak;
  - uptrain's peak GPU memory (torch.cuda.max_memory_allocated) against `uptrain plan`'s estimate for
    the same model and settings (uptrain.train.plan);
  - evaluator tokens/s (uptrain.evaluate.score_windows) against a bare forward pass over the same windows;
  - `uptrain convert --method fit+refine` (4,096 calibration tokens) of the MHA source on the GPU:
    wall time and peak GPU memory against `uptrain convert --plan`'s figures;
  - decode tokens/s of the source against its conversions at batch 1, 16 and 64 and contexts 1k and 4k,
    next to the KV-cache ratio (scripts/bench_decode.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_common import ROOT, Report, print_figures

# dense bf16 peak TFLOP/s (no sparsity), from the vendors' data sheets, by a substring of the device name
PEAK_TFLOPS = {"H200": 989, "H100 PCIe": 756, "H100": 989, "A100": 312, "L40S": 362, "A10G": 70, "L4": 121}
FULL = {"layers": 22, "hidden": 2048, "heads": 32, "seq_len": 1024, "batch": 8, "steps": 12, "warmup": 4}
TINY = {"layers": 2, "hidden": 64, "heads": 8, "seq_len": 64, "batch": 2, "steps": 6, "warmup": 2}


def peak_tflops(device: str, given: float | None) -> float | None:
    if given:
        return given
    return next((v for k, v in PEAK_TFLOPS.items() if k in device), None)


def student_config(shape: dict) -> dict:
    """config.json of the converted model bench_train trains (its TinyLlamaSpec, G = heads / 4)."""
    from uptrain.architectures.route import output_config, plan_route
    from uptrain.checkpoint.offline import TinyLlamaSpec, tiny_llama_config

    spec = TinyLlamaSpec(
        layers=shape["layers"],
        hidden=shape["hidden"],
        heads=shape["heads"],
        intermediate=shape["hidden"] * 8 // 3,
        max_positions=1024,
    )
    config = {"model_type": "llama", **tiny_llama_config(spec)}
    return output_config(plan_route(config, shape["heads"] // 4), config)


def planned_bytes(config: dict, shape: dict, cuda: bool) -> int:
    """`uptrain plan`'s per-device total for bench_train's uptrain run (1 process, no checkpointing)."""
    from uptrain.pipeline.planning import model_shape
    from uptrain.train.plan import Parallelism, Settings, plan_memory

    precision = "bf16" if cuda else "no"
    settings = Settings(shape["batch"], shape["seq_len"], 1, 4, precision, False)
    return plan_memory(model_shape(config), settings, Parallelism("single")).total


def run_script(name: str, args: list[str]) -> dict:
    cmd = [sys.executable, str(ROOT / "scripts" / name), *args]
    subprocess.run(cmd, check=True, cwd=ROOT, env=None)
    return json.loads(Path(args[args.index("--out") + 1]).read_text())


def evaluator_against_forward(config: dict, shape: dict, device: str, repeats: int) -> dict:
    """Tokens/s of score_windows and of a bare forward pass over the same windows and batches."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from uptrain.evaluate import Window, score_windows

    dtype = torch.bfloat16 if device != "cpu" else torch.float32
    settings = {k: v for k, v in config.items() if k != "model_type"}
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model("llama", **settings)).to(device, dtype)
    model.eval()
    seq, batch = shape["seq_len"], shape["batch"]
    ids = torch.randint(0, config["vocab_size"], (batch * 4 * seq,))
    windows = [Window(i * seq, (i + 1) * seq, i * seq + 1, (i + 1) * seq) for i in range(batch * 4)]
    tokens = sum(w.targets for w in windows)

    def sync() -> None:
        if device != "cpu":
            torch.cuda.synchronize()

    def evaluator() -> float:
        sync()
        t0 = time.perf_counter()
        score_windows(model, ids, windows, batch)
        sync()
        return tokens / (time.perf_counter() - t0)

    def bare() -> float:
        rows = ids.view(-1, seq).to(device)
        sync()
        t0 = time.perf_counter()
        with torch.inference_mode():
            for start in range(0, rows.shape[0], batch):
                model(input_ids=rows[start : start + batch], use_cache=False).logits.float()
        sync()
        return tokens / (time.perf_counter() - t0)

    evaluator(), bare()  # warm-up: kernels, allocator
    ours, theirs = [], []
    for i in range(repeats):
        for run in (evaluator, bare) if i % 2 == 0 else (bare, evaluator):
            (ours if run is evaluator else theirs).append(run())
    return {
        "evaluator_tokens_per_s": statistics.median(ours),
        "forward_tokens_per_s": statistics.median(theirs),
    }


def source_spec(shape: dict, max_positions: int):  # noqa: ANN201 - TinyLlamaSpec, imported late
    """The random MHA Llama of `shape` that the conversion and decode checks start from."""
    from uptrain.checkpoint.offline import TinyLlamaSpec

    return TinyLlamaSpec(
        layers=shape["layers"],
        hidden=shape["hidden"],
        heads=shape["heads"],
        intermediate=shape["hidden"] * 8 // 3,
        max_positions=max_positions,
    )


def calibrated_conversion(work: Path, shape: dict, cuda: bool) -> dict:
    """`uptrain convert --method fit+refine` of the ~1B MHA source to G = H/4 on the device, 4,096
    calibration tokens of the built-in text (256 for --tiny), in this process: wall time and peak GPU
    memory (torch.cuda.max_memory_allocated), next to `uptrain convert --plan --json`'s figures for
    the same command."""
    from uptrain.checkpoint.offline import build_tiny_llama
    from uptrain.checkpoint.source import open_source
    from uptrain.config import ConvertSection
    from uptrain.convert.convert import convert_checkpoint

    source = build_tiny_llama(work / "source-convert", source_spec(shape, 1024))
    tokens, seq_len = (256, 64) if shape is TINY else (4096, 512)
    options = {
        "groups": shape["heads"] // 4,
        "method": "fit+refine",
        "calibration_data": "builtin:python-docs",
        "calibration_tokens": tokens,
        "calibration_seq_len": seq_len,
        "device": "cuda" if cuda else "cpu",
    }
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
    command = [sys.executable, "-m", "uptrain", "convert", str(source), str(work / "planned"), *flags]
    plan = json.loads(subprocess.run([*command, "--plan", "--json"], check=True, capture_output=True).stdout)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    convert_checkpoint(open_source(source), work / "converted-fit-refine", ConvertSection(**options), True)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() if cuda else None
    return {"seconds": seconds, "peak_gpu_bytes": peak, "plan": plan, "options": options}


def write_section(docs: Path, device: str, data: dict) -> None:
    """Replace (or add at the end: below bench_all.py's notes marker, so regenerating the page keeps it)
    the '## GPU check: DEVICE' section of docs/BENCHMARKS.md."""
    heading = f"## GPU check: {device}"
    rows = [f"| {f['name']} | {f['value']:.4g} | {f['unit']} | {f['note']} |" for f in data["figures"]]
    section = "\n".join(
        [
            heading,
            "",
            f"`{data['command']}`, {data['started']}, {data['wall_s']} s in all. Generated by "
            "scripts/gpu_check.py; every ratio is measured side by side in this one run.",
            "",
            "| figure | value | unit | note |",
            "|---|---|---|---|",
            *rows,
            "",
        ]
    )
    text = docs.read_text() if docs.is_file() else "# Benchmarks\n"
    start = text.find(heading)
    if start >= 0:
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + section + (text[end + 1 :] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    docs.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="a miniature on CPU (CI)")
    ap.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak (default: the table)")
    ap.add_argument("--work", type=Path, help="scratch directory (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "gpu_check.json")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    args = ap.parse_args()
    cuda = torch.cuda.is_available() and not args.tiny
    if not cuda and not args.tiny:
        sys.exit("no GPU found; run with --tiny for the CPU miniature")
    shape = TINY if args.tiny else FULL
    device = torch.cuda.get_device_name() if cuda else "cpu"
    report = Report("gpu_check", "GPU check: ~1B MHA Llama converted to G = H/4, bf16", shape, device=device)
    config = student_config(shape)
    from uptrain.pipeline.planning import model_shape

    n = model_shape(config).params
    report.data["settings"]["parameters"] = n
    scratch = tempfile.TemporaryDirectory(prefix="gpu-check-")
    work = args.work or Path(scratch.name)
    work.mkdir(parents=True, exist_ok=True)

    size = [f"--{k.replace('_', '-')}" if i % 2 == 0 else str(v) for k, v in shape.items() for i in (0, 1)]
    size += ["--groups", str(shape["heads"] // 4), "--repeats", "1", "--out", str(work / "train.json")]
    train = run_script("bench_train.py", ["--tiny", "--out", str(work / "train.json")] if args.tiny else size)
    figures = {f["name"]: f["value"] for f in train["figures"]}
    ours = figures["uptrain tokens/s"]
    report.add(
        "uptrain / Trainer (tokens/s)", figures["uptrain / Trainer (tokens/s)"], "x", note="bench_train"
    )
    report.add("uptrain train tokens/s", ours, "tok/s")
    peak = peak_tflops(device, args.peak_tflops)
    if peak:
        report.add(
            "uptrain MFU", ours * 6 * n / (peak * 1e12), "", note=f"6 N tokens/s over {peak:g} TFLOP/s"
        )
    measured = train["details"]["uptrain_runs"][0].get("peak_memory_bytes")
    planned = planned_bytes(config, shape, cuda)
    report.add("planned memory (uptrain plan)", planned / 2**30, "GiB")
    if measured:
        report.add(
            "peak GPU memory / plan", measured / planned, "x", note=f"measured {measured / 2**30:.2f} GiB"
        )

    ev = evaluator_against_forward(config, shape, "cuda" if cuda else "cpu", 1 if args.tiny else 3)
    report.add(
        "evaluator / bare forward (tokens/s)", ev["evaluator_tokens_per_s"] / ev["forward_tokens_per_s"], "x"
    )

    conversion = calibrated_conversion(work, shape, cuda)
    report.add("fit+refine conversion (4,096 tokens)", conversion["seconds"], "s", note="uptrain convert")
    planned_s = conversion["plan"].get("seconds")
    if planned_s:
        report.add(
            "conversion time / plan", conversion["seconds"] / planned_s, "x", note=f"plan {planned_s:.0f} s"
        )
    planned_gpu = (conversion["plan"]["memory"].get("GPU memory") or {}).get("peak_bytes")
    if conversion["peak_gpu_bytes"] and planned_gpu:
        measured_gib = conversion["peak_gpu_bytes"] / 2**30
        report.add(
            "conversion peak GPU memory / plan",
            conversion["peak_gpu_bytes"] / planned_gpu,
            "x",
            note=f"measured {measured_gib:.2f} GiB",
        )

    decode_args = ["--out", str(work / "decode.json"), "--work", str(work / "decode")]
    if args.tiny:
        decode_args += ["--tiny", "--device", "cpu"]
    else:
        from uptrain.checkpoint.offline import build_tiny_llama

        source = build_tiny_llama(work / "source-mha", source_spec(shape, 8192))
        decode_args += ["--reference", str(source), "--reference-only", "--batches", "1,16,64"]
        decode_args += ["--contexts", "1024,4096", "--repeats", "1"]
    decode = run_script("bench_decode.py", decode_args)
    for f in decode["figures"]:
        report.add(f"decode: {f['name']}", f["value"], f["unit"], note=f["note"])
    report.data["details"] = {
        "train": train,
        "evaluator": ev,
        "conversion": conversion,
        "decode": decode,
        "peak_tflops": peak,
    }
    data = report.write(args.out)
    write_section(args.docs, device, data)
    print_figures(data)
    print(f"wrote {args.out} and the '{device}' section of {args.docs}")


if __name__ == "__main__":
    main()
