"""Full training, k/v/o-only training and LoRA side by side on the same tokens (issue 19, item 4).

Every variant uptrains the same converted checkpoint (SmolLM2-135M-Instruct mean-pooled from 3 KV heads
to 1 by `uptrain convert`) through the CLI as a user runs it (`python -m uptrain train --config ...`), on
the same blocks of the Python documentation text in the same order, the same held-out blocks, the same
learning rate and schedule; only what trains differs. From each run it reads metrics.jsonl (held-out
perplexity against tokens, wall time) and the optimizer state of its checkpoint (the trainable
parameters are the entries of Adam's exp_avg; the bytes are optimizer.bin on disk).

    python -m uptrain convert SmolLM2-135M-Instruct.Q4_1.gguf runs/lora-cmp/converted --groups 1
    python scripts/compare_lora.py --converted runs/lora-cmp/converted --out runs/lora-cmp --tokens 16K
    python scripts/compare_lora.py --out runs/lora-cmp --markdown --plot docs/img/lora-comparison.png
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

# name -> (label, train section overrides[, optim section overrides])
VARIANTS: dict[str, tuple] = {
    "full": ("full training", {"trainable": []}),
    "kvo": ("k/v/o only", {"trainable": ["*.k_proj.*", "*.v_proj.*", "*.o_proj.*"]}),
    "lora-r8-kvfull": ("LoRA r=8, new K/V in full", {"lora": {"rank": 8, "alpha": 16, "kv": "full"}}),
    "lora-r32-kvfull": ("LoRA r=32, new K/V in full", {"lora": {"rank": 32, "alpha": 64, "kv": "full"}}),
    "lora-r8-kvlora": ("LoRA r=8, new K/V by LoRA", {"lora": {"rank": 8, "alpha": 16, "kv": "lora"}}),
    "lora-r32-kvlora": ("LoRA r=32, new K/V by LoRA", {"lora": {"rank": 32, "alpha": 64, "kv": "lora"}}),
    # LoRA's updates start at zero and usually want a higher learning rate than full training
    "lora-r8-kvfull-lr5e-3": (
        "LoRA r=8, new K/V in full, lr 5e-3",
        {"lora": {"rank": 8, "alpha": 16, "kv": "full"}},
        {"lr": 5.0e-3},
    ),
    "lora-r32-kvfull-lr5e-3": (
        "LoRA r=32, new K/V in full, lr 5e-3",
        {"lora": {"rank": 32, "alpha": 64, "kv": "full"}},
        {"lr": 5.0e-3},
    ),
}


def base_config(converted: Path, tokens: str, steps_between_evals: int, checkpoint_every: int) -> dict:
    """The demo's recipe (configs/demo.yaml) on a converted checkpoint; what trains is left to the variant."""
    return {
        "model": {"path": str(converted)},
        "data": {"dataset": "builtin:python-docs", "seq_len": 128},
        "budget": {"max_tokens": tokens},
        "optim": {"lr": 1.0e-3, "weight_decay": 0.0, "warmup": 0.05},
        "train": {"per_device_batch": 4, "grad_accum": 1, "mixed_precision": "no", "cpu_threads": 2},
        "eval": {"blocks": 8, "every_steps": steps_between_evals},
        "checkpoint": {"every_steps": checkpoint_every, "keep_last": 1},
        "logging": {"every_steps": 1},
    }


def train(name: str, args: argparse.Namespace) -> None:
    out = args.out / name
    if (out / "final" / "uptrain.json").is_file():
        print(f"{name}: done")
        return
    config = base_config(args.converted.absolute(), args.tokens, args.eval_every, args.checkpoint_every)
    config["train"].update(VARIANTS[name][1])
    config["optim"].update(VARIANTS[name][2] if len(VARIANTS[name]) > 2 else {})
    out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    command = [sys.executable, "-m", "uptrain", "train", "--config", str(path), "--output", str(out)]
    resume = ["--resume"] if (out / "config.yaml").is_file() else []
    print(" ".join(command + resume), flush=True)
    subprocess.run(command + resume, check=True)


def summary(name: str, out: Path) -> dict:
    import torch

    run = out / name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    evals = [(r["tokens"], math.exp(r["eval_loss"])) for r in records if "eval_loss" in r]
    steps = [r for r in records if "loss" in r]
    checkpoint = sorted((run / "checkpoints").glob("step-*"))[-1]
    optimizer = checkpoint / "optimizer.bin"
    state = torch.load(optimizer, map_location="cpu", weights_only=True)["state"]
    trainable = sum(s["exp_avg"].numel() for s in state.values())
    return {
        "name": name,
        "label": VARIANTS[name][0],
        "evals": evals,
        # the median over logged steps: a step followed by an evaluation or a checkpoint counts that too
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in steps),
        "trainable": trainable,
        "optimizer_bytes": optimizer.stat().st_size,
        "checkpoint_weights_bytes": (checkpoint / "model.safetensors").stat().st_size,
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| variant | trainable parameters | optimizer state | checkpoint weights | tokens/s "
        "| held-out ppl: before | halfway | after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        evals = r["evals"]
        half = min(evals, key=lambda e: abs(e[0] - evals[-1][0] / 2))
        lines.append(
            f"| {r['label']} | {r['trainable']:,} | {r['optimizer_bytes'] / 2**20:.1f} MiB "
            f"| {r['checkpoint_weights_bytes'] / 2**20:.1f} MiB | {r['tokens_per_s']:.0f} "
            f"| {evals[0][1]:,.0f} | {half[1]:,.0f} ({half[0]:,} tokens) | {evals[-1][1]:,.0f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in rows:
        tokens, ppl = zip(*r["evals"], strict=True)
        style = "-" if "lora" not in r["name"] else ("--" if "kvfull" in r["name"] else ":")
        ax.plot(tokens, ppl, style, marker="o", markersize=3, label=r["label"])
    ax.set_xlabel("training tokens")
    ax.set_ylabel("held-out perplexity")
    ax.set_yscale("log")
    ax.set_title("SmolLM2-135M, 3 -> 1 KV heads (mean), same tokens")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--converted", type=Path, help="the converted checkpoint every variant uptrains")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tokens", default="16K", help="budget.max_tokens of every variant")
    p.add_argument("--eval-every", type=int, default=8, help="steps between held-out evaluations")
    p.add_argument("--checkpoint-every", type=int, default=16, help="steps between checkpoints (>= 1 needed)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--markdown", action="store_true", help="print the table of the finished variants")
    p.add_argument("--plot", type=Path, help="draw held-out perplexity against tokens into this PNG")
    args = p.parse_args()
    if not (args.markdown or args.plot):
        if args.converted is None:
            p.error("--converted is required to train")
        for name in args.variants:
            train(name, args)
        return
    done = [n for n in args.variants if (args.out / n / "final" / "uptrain.json").is_file()]
    rows = [summary(n, args.out) for n in done]
    if args.markdown:
        print(markdown(rows))
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
