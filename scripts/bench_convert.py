#!/usr/bin/env python
"""`uptrain convert` against the I/O floor (a copy) and the naive path, in wall time and peak memory.

    python scripts/bench_convert.py          # 1.26B-parameter MHA Llama (TinyLlama's shape), bf16, 5 shards
    python scripts/bench_convert.py --tiny   # a miniature, for tests

A synthetic multi-shard MHA checkpoint is written straight to safetensors (no model is built;
scripts/make_synthetic_checkpoint.py) under --work, or reused when one of the same shape is there.
Each repeat runs, in fresh subprocesses, convert and copy in alternating order (the machine may be
busy); the first repeat also runs naive and the diagnostics:
  convert   python -m uptrain convert SRC OUT --groups G          (as shipped: fsyncs its shards)
  copy      cp -r SRC OUT && sync OUT/*                            (the I/O floor, made as durable)
  naive     AutoModelForCausalLM.from_pretrained, mean-pool k/v_proj in place, save_pretrained, fsync
and, as diagnostics, `convert` with os.fsync patched out (the cost of durability) and the import
time of the convert path. Wall time is the child's; peak RSS is its ru_maxrss (os.wait4), which
counts the pages of the memory-mapped source that it touched (and cannot read below this script's
own size, which fork copies: so this script imports no torch; its size is recorded). Page cache:
before every run the source's pages are evicted (fsync, then posix_fadvise DONTNEED; no root
needed) and the previous output is deleted, so every run reads the source from the disk (a virtual
disk may still cache it on the host). Medians over --repeats. Targets: convert wall <= 2x copy;
convert peak RSS <= 1.5x the largest source shard and >= 3x below naive.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import ROOT, Report, print_figures

SHAPES = {  # layers, hidden, heads, intermediate, vocab, shards
    "default": (22, 2048, 32, 5632, 32000, 5),  # TinyLlama-1.1B with 32 KV heads (MHA): 1.26B parameters
    "tiny": (2, 64, 8, 128, 1000, 3),
}

NAIVE = r"""
import os, sys, torch
from transformers import AutoModelForCausalLM
src, out, groups = sys.argv[1], sys.argv[2], int(sys.argv[3])
model = AutoModelForCausalLM.from_pretrained(src, dtype="auto")
cfg = model.config
hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
kv = cfg.num_key_value_heads
with torch.no_grad():
    for layer in model.model.layers:
        for proj in (layer.self_attn.k_proj, layer.self_attn.v_proj):
            w = proj.weight
            pooled = w.view(groups, kv // groups, hd, -1).float().mean(1).to(w.dtype)
            proj.weight = torch.nn.Parameter(pooled.reshape(groups * hd, -1))
            proj.out_features = groups * hd
cfg.num_key_value_heads = groups
model.save_pretrained(out)
for name in os.listdir(out):  # as durable as uptrain convert's output
    fd = os.open(os.path.join(out, name), os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
"""

# `uptrain convert` exactly as the CLI runs it, but with os.fsync a no-op; also records whether
# transformers was imported on the way (it should not be).
NO_FSYNC = r"""
import os, runpy, sys
os.fsync = lambda fd: None
report, sys.argv = sys.argv[1], ["uptrain", *sys.argv[2:]]
try:
    runpy.run_module("uptrain", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
else:
    code = 0
open(report, "w").write(str("transformers" in sys.modules))
sys.exit(code)
"""

COMMANDS = {  # what each run is, in words, for the report
    "convert": "python -m uptrain convert SRC OUT --groups G",
    "copy": "cp -r SRC OUT && sync OUT/*",
    "naive": "from_pretrained(SRC), mean-pool k_proj/v_proj in place, save_pretrained(OUT), fsync",
    "convert_no_fsync": "python -m uptrain convert ..., with os.fsync a no-op",
    "import": "python -c 'import uptrain.cli, uptrain.convert.convert, uptrain.checkpoint.source'",
}
IMPORTS = "import uptrain.cli, uptrain.convert.convert, uptrain.checkpoint.source"


def child_env(threads: int | None) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def timed_child(cmd: list[str], env: dict[str, str], log: Path) -> dict:
    """Run cmd; its wall time, peak RSS and CPU time (from os.wait4: this child and its own children)."""
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        tail = log.read_text(errors="replace")[-2000:]
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n{tail}")
    rss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return {"wall_s": wall, "peak_rss_bytes": rss, "cpu_s": usage.ru_utime + usage.ru_stime}


def _own_peak_rss() -> int:
    """This process's peak RSS: a child's ru_maxrss cannot read below it (fork copies the mark)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def evict(paths: list[Path]) -> None:
    """Drop these files' pages from the page cache (written back first), without root."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm(paths: list[Path]) -> None:
    for path in paths:
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass


def build_source(work: Path, shape: tuple, dtype: str, tiny: bool) -> Path:
    """The synthetic MHA checkpoint, reused when one of this shape is already there. Written by a
    subprocess, so that this process stays small (its size is charged to the children it times)."""
    layers, hidden, heads, intermediate, vocab, shards = shape
    spec = {"shape": list(shape), "dtype": dtype}
    src = work / ("source-tiny" if tiny else "source")
    marker = src / "bench-spec.json"
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return src
    shutil.rmtree(src, ignore_errors=True)
    started = time.perf_counter()
    flags = dict(layers=layers, hidden=hidden, heads=heads, intermediate=intermediate, vocab=vocab)
    cmd = [sys.executable, str(ROOT / "scripts" / "make_synthetic_checkpoint.py"), str(src)]
    cmd += [f"--{k}={v}" for k, v in flags.items()] + [f"--shards={shards}", f"--dtype={dtype}"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    marker.write_text(json.dumps(spec))
    print(f"built {src} in {time.perf_counter() - started:.0f} s", flush=True)
    return src


def checkpoint_bytes(shape: tuple, dtype: str) -> int:
    layers, hidden, heads, intermediate, vocab, _ = shape
    per_layer = 4 * hidden * hidden + 3 * hidden * intermediate + 2 * hidden
    return (2 * vocab * hidden + hidden + layers * per_layer) * (4 if dtype == "fp32" else 2)


def check_disk(work: Path, need: int) -> None:
    work.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(work).free
    if free < need:
        raise SystemExit(f"need {need / 1e9:.1f} GB free under {work}, have {free / 1e9:.1f} GB")


def check_output(out: Path, groups: int) -> None:
    config = json.loads((out / "config.json").read_text())
    if config["num_key_value_heads"] != groups:
        raise SystemExit(f"{out}: num_key_value_heads {config['num_key_value_heads']}, expected {groups}")


def layer0_keys(out: Path) -> bytes:
    """The raw bytes of layer 0's k_proj in an output (read from the safetensors header by hand, so
    that this process needs no torch), to check that uptrain and the naive path agree."""
    name = "model.layers.0.self_attn.k_proj.weight"
    for file in sorted(out.glob("*.safetensors")):
        with open(file, "rb") as f:
            size = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(size))
            if name in header:
                begin, end = header[name]["data_offsets"]
                f.seek(8 + size + begin)
                return f.read(end - begin)
    raise SystemExit(f"{out} has no {name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-convert")
    ap.add_argument("--tiny", action="store_true", help="a miniature checkpoint and one repeat (tests)")
    ap.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16")
    ap.add_argument("--groups", type=int, help="KV heads to keep (default: H/4)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cache", choices=("cold", "warm"), default="cold", help="evict or preload the source")
    ap.add_argument("--no-diagnostics", action="store_true", help="skip the no-fsync and import runs")
    ap.add_argument("--threads", type=int, help="OMP_NUM_THREADS for the children (default: torch's)")
    ap.add_argument("--keep-source", action="store_true", help="keep the synthetic source for the next run")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "convert.json")
    args = ap.parse_args()
    shape = SHAPES["tiny" if args.tiny else "default"]
    repeats = 1 if args.tiny else args.repeats
    groups = args.groups or shape[2] // 4

    report = Report(
        "convert",
        "uptrain convert vs a copy (the I/O floor) and the naive from_pretrained/save_pretrained",
        {
            "layers_hidden_heads_intermediate_vocab_shards": list(shape),
            "dtype": args.dtype,
            "kv_heads": f"{shape[2]} -> {groups}",
            "repeats": repeats,
            "page_cache": args.cache,
            "threads": args.threads,
        },
    )
    size = checkpoint_bytes(shape, args.dtype)
    source_there = (args.work / "source" / "bench-spec.json").is_file()
    check_disk(args.work, int(1.2 * size * (1 if source_there else 2)) + (1 << 28))
    src = build_source(args.work, shape, args.dtype, args.tiny)
    shards = sorted(src.glob("*.safetensors"))
    largest = max(p.stat().st_size for p in shards)
    total = sum(p.stat().st_size for p in shards)
    env = child_env(args.threads)
    out = args.work / "out"
    logs = Path(tempfile.mkdtemp(prefix="bench-convert-"))
    py = sys.executable
    flag = logs / "transformers-imported"
    commands = {
        "convert": [py, "-m", "uptrain", "convert", str(src), str(out), "--groups", str(groups)],
        "copy": ["sh", "-c", 'cp -r "$0" "$1" && sync "$1"/*', str(src), str(out)],
        "naive": [py, "-c", NAIVE, str(src), str(out), str(groups)],
    }
    if not args.no_diagnostics:
        commands["convert_no_fsync"] = [py, "-c", NO_FSYNC, str(flag), *commands["convert"][3:]]
        commands["import"] = [py, "-c", IMPORTS]
    runs: dict[str, list[dict]] = {name: [] for name in commands}
    keys, transformers_imported = {}, None
    try:
        for repeat in range(repeats):
            # convert and copy every repeat, in alternating order; the naive path (whose memory is the
            # figure, and that varies little) and the diagnostics in the first repeat only
            names = ["convert", "copy"] if repeat % 2 == 0 else ["copy", "convert"]
            if repeat == 0:
                names += [name for name in commands if name not in names]
            for name in names:
                shutil.rmtree(out, ignore_errors=True)
                (evict if args.cache == "cold" else warm)(shards)
                run = timed_child(commands[name], env, logs / f"{name}-{repeat}.log")
                if name != "import":
                    check_output(out, groups if name != "copy" else shape[2])
                if name in ("convert", "naive") and repeat == 0:
                    keys[name] = layer0_keys(out)
                if name == "convert":
                    said = re.search(r"in ([\d.]+) s to", (logs / f"{name}-{repeat}.log").read_text())
                    run["reported_s"] = float(said[1]) if said else None
                if name == "convert_no_fsync":
                    transformers_imported = flag.read_text() == "True"
                runs[name].append(run)
                mib = run["peak_rss_bytes"] / 2**20
                print(f"  {name:<18} {run['wall_s']:7.2f} s  {mib:8.0f} MiB", flush=True)
    finally:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(logs, ignore_errors=True)
        if not args.keep_source:
            shutil.rmtree(src, ignore_errors=True)

    same = keys["convert"] == keys["naive"]
    med = {
        name: {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "peak_rss_bytes", "cpu_s")}
        for name, rs in runs.items()
    }
    conv, copy, naive = med["convert"], med["copy"], med["naive"]
    wall_ratio = conv["wall_s"] / copy["wall_s"]
    rss_shard = conv["peak_rss_bytes"] / largest
    naive_rss = naive["peak_rss_bytes"] / conv["peak_rss_bytes"]
    report.add("convert wall / copy wall", wall_ratio, "x", "<= 2.0", wall_ratio <= 2.0)
    report.add("convert peak RSS / largest shard", rss_shard, "x", "<= 1.5", rss_shard <= 1.5)
    report.add("naive peak RSS / convert peak RSS", naive_rss, "x", ">= 3.0", naive_rss >= 3.0)
    report.add("naive wall / convert wall", naive["wall_s"] / conv["wall_s"], "x")
    report.add("convert wall", conv["wall_s"], "s")
    report.add("copy wall", copy["wall_s"], "s")
    report.add("convert peak RSS", conv["peak_rss_bytes"] / 2**20, "MiB")
    if "import" in med:
        report.add("convert path import time", med["import"]["wall_s"], "s", note="in convert wall")
        fsync = conv["wall_s"] / med["convert_no_fsync"]["wall_s"]
        report.add("convert wall / convert wall without fsync", fsync, "x", note="the cost of durability")
    report.data["details"] = {
        "checkpoint_bytes": total,
        "largest_shard_bytes": largest,
        "shards": len(shards),
        "medians": med,
        "runs": runs,
        "rss_of_this_process_bytes": _own_peak_rss(),
        "naive_and_convert_agree_on_layer0_keys": same,
        "transformers_imported_by_convert": transformers_imported,
        "commands": {k: v for k, v in COMMANDS.items() if k in commands},
    }
    if not same:
        raise SystemExit("uptrain convert and the naive path disagree on layer 0's k_proj")
    print_figures(report.write(args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
