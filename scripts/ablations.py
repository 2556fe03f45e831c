"""The GQA paper's ablations (Ainslie et al. 2023, Figures 4-6) on the tiny MHA reference model.

    python scripts/build_reference_model.py --wikitext wikitext-2-valid-tokenized.txt --out runs/reference
    python scripts/ablations.py --reference runs/reference --eval-text wikitext-2-raw-test.txt

Experiments (H = the reference's heads; GQA = H/4 groups, MQA = 1):
  (a) methods:   mean vs first vs random conversion, each uptrained on 5% of the pre-training tokens;
  (b) fractions: mean conversion uptrained on 0, 1, 2.5, 5 and 10% of the pre-training tokens;
  (c) groups:    G = every divisor of H (G = H: the MHA model itself, trained on 5% more), 5%;
  (d) objective: cross-entropy vs distillation from the MHA reference (distill.weight 0.5 and 1), 5%;
  (e) lr:        the uptraining learning rate (MQA, 5%): the recipe's 1e-3 against 3e-4 and 3e-3.

Each checkpoint is built with uptrain's library (convert_checkpoint; uptrain train's loop on the
reference's own corpus, batch and sequence length, the budget a fraction of the `pretraining_tokens`
in its uptrain.json) and scored with uptrain.evaluate on the first --eval-tokens tokens of the
evaluation text (WikiText-2 raw test: never trained on). Resumable: a conversion, training run or
evaluation whose output exists is skipped, so rerunning after an interruption continues where it
stopped and rerunning a finished study only rewrites the report. The report (tables, plots, the
commands) replaces the ablations section of --results (docs/RESULTS.md), leaving the rest alone.
`--tiny` runs a smaller plan (for tests and smoke runs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from ablation_plan import Model, Plan, make_plan  # noqa: E402


@dataclass
class Study:
    reference: Path  # the reference model directory
    corpus: Path  # its pre-training corpus (uptraining text)
    tokenizer_dir: Path
    work: Path
    eval_text: str  # the evaluation text, cut to hold --eval-tokens tokens
    eval_source: str
    eval_tokens: int
    window: int
    threads: int
    log: Callable[[str], None] = print

    def checkpoint(self, model: Model) -> Path:
        if model.groups is None:
            return self.reference
        if not model.fraction:
            return self.work / "converted" / model.name
        return self.work / "uptrained" / model.name / "final"

    def evaluation_file(self, model: Model) -> Path:
        return self.work / "evals" / f"{model.name}.json"


def reference_record(reference: Path) -> dict[str, Any]:
    return json.loads((reference / "uptrain.json").read_text())


def convert(study: Study, model: Model) -> Path:
    from uptrain.checkpoint.source import open_source
    from uptrain.config import ConvertSection
    from uptrain.convert.convert import convert_checkpoint

    out = study.checkpoint(model)
    if (out / "uptrain.json").is_file():
        return out
    started = time.perf_counter()
    convert_checkpoint(
        open_source(study.reference),
        out,
        ConvertSection(groups=model.groups, method=model.method),
        overwrite=True,
    )
    study.log(f"converted {model.name} in {time.perf_counter() - started:.1f} s")
    return out


def uptraining_config(study: Study, model: Model, converted: Path) -> dict[str, Any]:
    """The `uptrain train` config of one uptraining run: the reference's batch, sequence length and
    held-out blocks; the budget a fraction of its pre-training tokens."""
    pre = reference_record(study.reference)["training"]
    return {
        "model": {"path": str(converted), "tokenizer": str(study.tokenizer_dir)},
        "data": {"dataset": str(study.corpus), "config": None, "seq_len": pre["seq_len"]},
        "budget": {"fraction": model.fraction},
        "optim": {"lr": model.lr, "warmup": 0.1, "weight_decay": 0.1},
        "train": {
            "per_device_batch": pre["global_batch"],
            "mixed_precision": "no",
            "seed": model.seed,
            "cpu_threads": study.threads,
        },
        "distill": {"enabled": bool(model.distill), "weight": model.distill or 0.5},
        "eval": {"blocks": _heldout_blocks(study), "every_steps": 0},
        "checkpoint": {"every_steps": 0},
        "logging": {"every_steps": 10},
    }


def _heldout_blocks(study: Study) -> int:
    args = reference_record(study.reference).get("reference", {}).get("arguments", {})
    return int(args.get("eval_blocks", 32))


def uptrain(study: Study, model: Model) -> Path:
    from rich.console import Console

    from uptrain.config import parse_config
    from uptrain.pipeline.training import run_training

    final = study.checkpoint(model)
    if (final / "uptrain.json").is_file():
        return final
    converted = convert(study, model.conversion)
    run = final.parent
    cfg = parse_config(uptraining_config(study, model, converted))
    cfg.output = str(run)
    run.mkdir(parents=True, exist_ok=True)
    reset_accelerate()
    started = time.perf_counter()
    with (run / "train.log").open("a") as log:
        run_training(cfg, run, resume=True, console=Console(file=log, soft_wrap=True, width=120))
    seconds = time.perf_counter() - started
    (run / "wall_seconds.json").write_text(json.dumps({"seconds": seconds}) + "\n")
    study.log(f"uptrained {model.name} in {seconds:.0f} s")
    return final


def reset_accelerate() -> None:
    """Accelerate keeps process-wide singletons; each training run here starts from a clean slate."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def evaluate(study: Study, model: Model, tokenizer: Any) -> dict[str, Any]:
    from uptrain.checkpoint.atomic import atomic_write_text
    from uptrain.evaluate import EvalSettings, evaluate_checkpoints, resolve_checkpoint

    path = study.evaluation_file(model)
    if path.is_file():
        return json.loads(path.read_text())
    checkpoint = study.checkpoint(model)
    if model.groups is not None:
        checkpoint = uptrain(study, model) if model.fraction else convert(study, model)
    settings = EvalSettings(
        window=study.window,
        stride=study.window // 2,
        batch_size=32,
        max_tokens=study.eval_tokens,
        dtype="fp32",
        device="cpu",
        harness=False,
        kv_context=study.window,
    )
    started = time.perf_counter()
    report = evaluate_checkpoints(
        [resolve_checkpoint(str(checkpoint))],
        study.eval_text,
        settings,
        dataset={"dataset": study.eval_source},
        tokenizer=tokenizer,
    )
    result = report.to_dict()["models"][0]
    result["eval_seconds"] = time.perf_counter() - started
    result["tokens"] = report.tokens
    result.update(_training_facts(checkpoint))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    study.log(f"evaluated {model.name}: perplexity {result['perplexity']:.2f}")
    return result


def _training_facts(checkpoint: Path) -> dict[str, Any]:
    """From an uptrained checkpoint's run: tokens, fraction, held-out loss before/after, wall time."""
    record = json.loads((checkpoint / "uptrain.json").read_text())
    training = record.get("training")
    if not training or training.get("from_scratch"):
        return {}
    run = checkpoint.parent
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    wall = run / "wall_seconds.json"
    return {
        "uptraining_tokens": training["tokens_seen"],
        "uptraining_steps": training["steps"],
        "fraction_of_pretraining": training["fraction_of_pretraining"],
        "heldout_loss_before": first.get("eval_loss"),
        "heldout_loss_after": training["heldout_loss"],
        "train_seconds": json.loads(wall.read_text())["seconds"] if wall.is_file() else None,
    }


def eval_prefix(tokenizer: Any, text: str, tokens: int) -> str:
    """The shortest run of whole lines at the start of `text` that holds at least `tokens` tokens."""
    encoding = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    offsets = encoding["offset_mapping"]
    if len(offsets) <= tokens:
        return text
    end = text.find("\n", offsets[tokens][1])
    return text if end < 0 else text[: end + 1]


def open_study(args: argparse.Namespace) -> Study:
    from uptrain.checkpoint.loading import load_tokenizer
    from uptrain.errors import UptrainError

    root = Path(args.reference).absolute()
    reference = root / "pretrain" / "final"
    if not (reference / "uptrain.json").is_file() or not (root / "corpus.jsonl").is_file():
        raise UptrainError(f"{root} holds no finished reference model; run scripts/build_reference_model.py")
    if "pretraining_tokens" not in reference_record(reference):
        raise UptrainError(f"{reference}/uptrain.json records no pretraining_tokens; rebuild the reference")
    tokenizer = load_tokenizer(root / "tokenizer")
    text = Path(args.eval_text).read_text(encoding="utf-8")
    window = reference_record(reference)["training"]["seq_len"]
    return Study(
        reference=reference,
        corpus=root / "corpus.jsonl",
        tokenizer_dir=root / "tokenizer",
        work=Path(args.work).absolute(),
        eval_text=eval_prefix(tokenizer, text, args.eval_tokens),
        eval_source=Path(args.eval_text).name,
        eval_tokens=args.eval_tokens,
        window=window,
        threads=args.threads,
    )


def run_study(study: Study, plan: Plan) -> dict[str, dict[str, Any]]:
    """Evaluate every checkpoint of the plan (building what is missing); name -> evaluation."""
    import torch

    from uptrain.checkpoint.loading import load_tokenizer

    torch.set_num_threads(study.threads)
    tokenizer = load_tokenizer(study.tokenizer_dir)
    return {model.name: evaluate(study, model, tokenizer) for model in plan.models}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", default="runs/reference", help="scripts/build_reference_model.py --out")
    p.add_argument("--eval-text", required=True, help="evaluation text (WikiText-2 raw test)")
    p.add_argument("--work", default="runs/ablations", help="where checkpoints and evaluations go")
    p.add_argument("--results", default="docs/RESULTS.md", help="the page whose ablations section is written")
    p.add_argument("--img", default="docs/img", help="where the plots go")
    p.add_argument("--eval-tokens", type=int, default=32768, help="evaluate on this many tokens")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 suits a busy 2-core machine)")
    p.add_argument("--tiny", action="store_true", help="a smaller plan (tests, smoke runs)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from ablation_report import write_report

    args = parse_args(argv)
    started = time.perf_counter()
    study = open_study(args)
    heads = json.loads((study.reference / "config.json").read_text())["num_attention_heads"]
    plan = make_plan(heads, tiny=args.tiny)
    results = run_study(study, plan)
    command = " ".join(["python", "scripts/ablations.py", *(argv if argv is not None else sys.argv[1:])])
    page = write_report(study, plan, results, Path(args.results), Path(args.img), command)
    print(f"wrote {page} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
