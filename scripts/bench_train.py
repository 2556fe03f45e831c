"""Training throughput of `uptrain train` against Hugging Face's Trainer, side by side (JSON out).

    python scripts/bench_train.py [--layers 4 --hidden 256 --seq-len 256 --batch 8 --steps 24] [--out OUT]
    python scripts/bench_train.py --tiny    # a miniature, for tests

Both train the same converted GQA model (a random Llama built offline, mean-pooled to G KV heads) on the
same packed blocks of the same text (WikiText-2 test when --text is given, else the Python docs that ship
with Python), with the same per-device batch, precision (fp32 on CPU; bf16 autocast on a GPU), AdamW,
cosine schedule, warmup and gradient clipping. Throughput is training tokens per second between the end of
step --warmup and the end of the last step, so start-up, tokenization and saving are left out. The runs
alternate (uptrain, Trainer, Trainer, uptrain, ...) in fresh subprocesses and the median of each is
compared, because the machine may be shared. The uptrain run also reports its step-time breakdown
(data, forward, backward, optimizer, other) from metrics.jsonl, and both report the padding fraction of
the batches they trained on. JSON in the format of scripts/bench_common.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from bench_common import ROOT, Report, print_figures


def build_model_and_blocks(args: argparse.Namespace, work: Path) -> tuple[Path, Path]:
    """The converted model and the packed training blocks (saved with datasets), built once."""
    from uptrain.checkpoint.loading import load_tokenizer
    from uptrain.checkpoint.offline import TinyLlamaSpec, build_tiny_llama
    from uptrain.checkpoint.source import open_source
    from uptrain.config import ConvertSection
    from uptrain.convert.convert import convert_checkpoint
    from uptrain.data import TextSource, builtin_text, load_text_dataset
    from uptrain.train.packing import tokenize_and_pack

    spec = TinyLlamaSpec(
        layers=args.layers,
        hidden=args.hidden,
        heads=args.heads,
        intermediate=args.hidden * 8 // 3,
        max_positions=1024,
    )
    source = build_tiny_llama(work / "source", spec)
    model = work / "converted"
    if not model.exists():
        convert_checkpoint(open_source(source), model, ConvertSection(groups=args.groups))
    text_file = Path(args.text) if args.text else work / "python-docs.txt"
    if not args.text:
        text_file.write_text(builtin_text("python-docs"))
    tokenizer = load_tokenizer(model)
    rows = load_text_dataset(TextSource(dataset=str(text_file), split="train"))
    blocks = tokenize_and_pack(rows, tokenizer, args.seq_len)
    blocks_dir = work / "blocks"
    blocks.save_to_disk(str(blocks_dir))
    # for context: what padding each document (here: each line) to seq_len would have cost
    lines = [line for line in text_file.read_text().splitlines() if line.strip()]
    lengths = [min(len(ids) + 1, args.seq_len) for ids in tokenizer(lines, verbose=False)["input_ids"]]
    meta = {
        "text": str(text_file),
        "blocks": len(blocks),
        "padding_fraction_if_padded_per_line": 1 - sum(lengths) / (len(lengths) * args.seq_len),
    }
    (work / "data.json").write_text(json.dumps(meta))
    return model, blocks_dir


def run_uptrain(args: argparse.Namespace, work: Path, model: Path, text: Path, out: Path) -> dict:
    """`uptrain train` on the converted model; tokens/s and phase times from its metrics.jsonl."""
    config = {
        "model": {"path": str(model)},
        "data": {"dataset": str(text), "seq_len": args.seq_len},
        "budget": {"max_steps": args.steps},
        "optim": {"lr": 1e-3, "warmup": 0.1, "max_grad_norm": 1.0, "weight_decay": 0.1},
        "train": {"per_device_batch": args.batch, "grad_accum": 1, "mixed_precision": "auto"},
        "eval": {"blocks": 1, "every_steps": 0},
        "checkpoint": {"every_steps": 0},
        "logging": {"every_steps": 1},
    }
    import yaml

    path = work / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "uptrain", "train", "--config", str(path), "--output", str(out)]
    subprocess.run(cmd, check=True, env=_env(), cwd=ROOT, capture_output=True)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = {r["step"]: r for r in records if "loss" in r}
    first, last = steps[args.warmup], steps[args.steps]
    tokens = last["tokens"] - first["tokens"]
    measured = [steps[s] for s in range(args.warmup + 1, args.steps + 1)]
    phases = {k: statistics.mean(r[k] for r in measured) for k in measured[0] if k.startswith("time_")}
    padding = _padding_fraction_of_blocks(work / "blocks")
    return {
        "tokens_per_s": tokens / (last["elapsed_s"] - first["elapsed_s"]),
        "step_s": phases,
        "final_loss": last["loss"],
        "padding_fraction": padding,
        "peak_memory_bytes": last.get("peak_memory_bytes"),  # on CUDA
    }


HF_TRAINER = r"""
import json, sys, time
import datasets, torch
from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments
from transformers import default_data_collator
model_dir, blocks_dir, out, batch, steps, warmup = sys.argv[1:7]
batch, steps, warmup = int(batch), int(steps), int(warmup)
blocks = datasets.load_from_disk(blocks_dir)
blocks = blocks.select(range(1, len(blocks)))  # as uptrain: the first block is held out
blocks = blocks.map(lambda b: {"labels": b["input_ids"]}, batched=True)
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
marks, pads = {}, []
class Clock(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        marks[state.global_step] = time.perf_counter()
bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
args = TrainingArguments(
    output_dir=out, per_device_train_batch_size=batch, max_steps=steps, learning_rate=1e-3,
    lr_scheduler_type="cosine", warmup_steps=round(0.1 * steps), weight_decay=0.1, adam_beta1=0.9,
    adam_beta2=0.95, max_grad_norm=1.0, logging_steps=steps, save_strategy="no", report_to=[],
    bf16=bf16, seed=0, dataloader_num_workers=0, disable_tqdm=True,
)
def collate(rows):
    batch = default_data_collator(rows)
    pads.append(float((batch["labels"] == -100).float().mean()))
    return batch
trainer = Trainer(model=model, args=args, train_dataset=blocks, data_collator=collate, callbacks=[Clock()])
result = trainer.train()
tokens = (steps - warmup) * batch * len(blocks[0]["input_ids"])
print(json.dumps({"tokens_per_s": tokens / (marks[steps] - marks[warmup]),
                  "mean_loss": result.training_loss, "padding_fraction": sum(pads) / len(pads)}))
"""


def run_trainer(args: argparse.Namespace, model: Path, blocks: Path, out: Path) -> dict:
    cmd = [
        sys.executable,
        "-c",
        HF_TRAINER,
        str(model),
        str(blocks),
        str(out),
        str(args.batch),
        str(args.steps),
    ]
    cmd.append(str(args.warmup))
    done = subprocess.run(cmd, check=True, env=_env(), cwd=ROOT, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _padding_fraction_of_blocks(blocks_dir: Path) -> float:
    import datasets

    blocks = datasets.load_from_disk(str(blocks_dir))
    lengths = {len(ids) for ids in blocks["input_ids"]}
    return 0.0 if len(lengths) == 1 else float("nan")  # fixed-length blocks: nothing to pad


THREADS: dict[str, str] = {}


def _env() -> dict:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **THREADS,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--groups", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--warmup", type=int, default=4, help="steps left out of the timing")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--text", help="a .txt file (default: the Python docs text)")
    ap.add_argument("--threads", type=int, help="OMP_NUM_THREADS for both runs (default: torch's choice)")
    ap.add_argument("--tiny", action="store_true", help="a miniature model and run, one repeat (tests)")
    ap.add_argument("--out", "--json", type=Path, default=ROOT / "runs" / "bench" / "train.json")
    args = ap.parse_args()
    if args.tiny:
        args.layers, args.hidden, args.seq_len, args.batch = 2, 64, 64, 2
        args.steps, args.warmup, args.repeats = 6, 2, 1
    if args.threads:
        THREADS.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))

    report = Report(
        "train",
        "training tokens/s: uptrain train vs transformers Trainer, same model, data, batch, precision",
        {
            "model_layers_hidden_heads_kv": [args.layers, args.hidden, args.heads, args.groups],
            "batch_seq_len": [args.batch, args.seq_len],
            "steps_timed_from": [args.steps, args.warmup],
            "repeats": args.repeats,
            "precision": "bf16 autocast" if torch.cuda.is_available() else "fp32",
            "threads": args.threads or torch.get_num_threads(),
        },
        device=torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    )
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = Path(tmp)
        model, blocks = build_model_and_blocks(args, work)
        data = json.loads((work / "data.json").read_text())
        text = Path(data["text"])
        ours, theirs = [], []
        for i in range(args.repeats):  # alternate which goes first: the load drifts
            runs = [
                lambda i=i: ours.append(run_uptrain(args, work, model, text, work / f"uptrain-{i}")),
                lambda i=i: theirs.append(run_trainer(args, model, blocks, work / f"trainer-{i}")),
            ]
            for run in runs if i % 2 == 0 else runs[::-1]:
                run()
        report.data["settings"]["text"] = data["text"] if args.text else "python-docs (built in)"
        ours_tps = statistics.median(r["tokens_per_s"] for r in ours)
        theirs_tps = statistics.median(r["tokens_per_s"] for r in theirs)
    ratio = ours_tps / theirs_tps
    breakdown = {k: statistics.median(r["step_s"][k] for r in ours) for k in ours[0]["step_s"]}
    report.add("uptrain / Trainer (tokens/s)", ratio, "x", ">= 1.0", ratio >= 1.0)
    report.add("uptrain tokens/s", ours_tps, "tok/s")
    report.add("Trainer tokens/s", theirs_tps, "tok/s")
    for key, seconds in breakdown.items():
        phase = key.removeprefix("time_").removesuffix("_s")
        report.add(f"uptrain step time: {phase}", seconds * 1000, "ms")
    report.data["details"] = {
        "data": data,
        "uptrain_runs": ours,
        "trainer_runs": theirs,
        "uptrain_step_s_breakdown": breakdown,
        "padding_fraction": {
            "uptrain": ours[0]["padding_fraction"],
            "trainer": theirs[0]["padding_fraction"],
        },
    }
    print_figures(report.write(args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
