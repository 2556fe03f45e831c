"""The GQA paper's ablations (Ainslie et al. 2023, Figures 4-6) on the tiny MHA reference model.

    python scripts/build_reference_model.py --wikitext ../shared/data/wikitext-2-valid-tokenized.txt \
        --out runs/reference
    python scripts/ablations.py --reference runs/reference

Experiments (H = the reference's heads; GQA = H/4 groups, MQA = 1):
  (a) methods:   mean vs first vs random conversion, each uptrained on 5% of the pre-training tokens;
  (b) fractions: mean conversion uptrained on 0, 1, 2.5, 5 and 10% of the pre-training tokens;
  (c) groups:    G = every divisor of H (G = H: the MHA model itself, trained on 5% more), 5%;
  (d) objective: cross-entropy vs distillation from the MHA reference (distill.weight 0.5 and 1), 5%;
  (e) lr:        the uptraining learning rate (MQA, 5%): the recipe's 1e-3 against 3e-4 and 3e-3.

Each uptrained checkpoint is one `uptrain run` (uptrain.pipeline.run_pipeline, with a config built by
uptrain.config.parse_config) into --work/uptrained/NAME: convert the reference, train on the reference's
own corpus, batch and sequence length (the budget a fraction of the `pretraining_tokens` in its
uptrain.json), and score source, converted and uptrained on the first --eval-tokens tokens of the
evaluation text (WikiText-2 raw test: never trained on). A checkpoint that is not uptrained (0%) is the
converted model of such a run, and the reference is their source. Resumption is the pipeline's: a
rerun skips every stage whose manifest matches, so it continues where an interrupted run stopped and,
once everything is finished, only rewrites the report. --work/evals/NAME.json gathers each checkpoint's
numbers (rewritten only when they change). The report (tables, plots, the commands) replaces the
ablations section of --results (docs/RESULTS.md), leaving the rest alone. `--tiny` runs a smaller plan
(for tests and smoke runs).
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

from ablation_format import checkout_relative
from ablation_plan import Model, Plan, make_plan

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_EVAL_TEXT = ROOT.parent / "shared" / "data" / "wikitext-2-raw-test.txt"


@dataclass
class Study:
    reference: Path  # the reference model directory
    corpus: Path  # its pre-training corpus (uptraining text)
    tokenizer_dir: Path
    work: Path
    eval_text: Path  # the evaluation text file
    eval_tokens: int
    window: int
    threads: int
    log: Callable[[str], None] = print

    @property
    def eval_source(self) -> str:
        return self.eval_text.name

    def run_dir(self, model: Model) -> Path:
        """The `uptrain run` output of an uptrained checkpoint."""
        return self.work / "uptrained" / model.name

    def evaluation_file(self, model: Model) -> Path:
        return self.work / "evals" / f"{model.name}.json"


def reference_record(reference: Path) -> dict[str, Any]:
    return json.loads((reference / "uptrain.json").read_text())


def uptraining_config(study: Study, model: Model) -> dict[str, Any]:
    """The training part of one run's config: the reference's batch, sequence length and held-out
    blocks; the budget a fraction of its pre-training tokens."""
    pre = reference_record(study.reference)["training"]
    return {
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


def run_config(study: Study, model: Model) -> dict[str, Any]:
    """The whole `uptrain run` config of one uptrained checkpoint."""
    return {
        "model": {
            "convert": {"source": str(study.reference), "groups": model.groups, "method": model.method},
            "tokenizer": str(study.tokenizer_dir),
        },
        **uptraining_config(study, model),
        "report": {
            "dataset": str(study.eval_text),
            "max_tokens": study.eval_tokens,
            "window": study.window,
            "stride": study.window // 2,
            "batch_size": 32,
            "dtype": "fp32",
            "kv_context": study.window,
            "plots": False,
        },
    }


def _heldout_blocks(study: Study) -> int:
    args = reference_record(study.reference).get("reference", {}).get("arguments", {})
    return int(args.get("eval_blocks", 32))


def reset_accelerate() -> None:
    """Accelerate keeps process-wide singletons; each training run here starts from a clean slate."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def run(study: Study, model: Model) -> Path:
    """Run (or resume, or skip: the pipeline decides) the uptrain run of one uptrained checkpoint."""
    from rich.console import Console

    from uptrain.config import parse_config
    from uptrain.pipeline import run_pipeline

    out = study.run_dir(model)
    cfg = parse_config(run_config(study, model))
    out.mkdir(parents=True, exist_ok=True)
    reset_accelerate()
    with (out / "pipeline.log").open("a") as log:
        outcome = run_pipeline(cfg, out, Console(file=log, soft_wrap=True, width=120))
    if outcome.statuses.get("convert") == "ran":
        study.log(f"converted {model.name}")
    if outcome.statuses.get("train") in ("ran", "resumed"):
        seconds = _stage_seconds(out, "train")
        study.log(f"uptrained {model.name} in {seconds:.0f} s")
    return out


def _stage_seconds(run_dir: Path, stage: str) -> float | None:
    """How long a stage took when it ran, from its manifest (uptrain.pipeline.manifest)."""
    path = run_dir / "stages" / f"{stage}.json"
    return json.loads(path.read_text()).get("seconds") if path.is_file() else None


def _training_facts(run_dir: Path) -> dict[str, Any]:
    """From an uptrained checkpoint's run: tokens, fraction, held-out loss before/after, wall time."""
    training = json.loads((run_dir / "final" / "uptrain.json").read_text())["training"]
    first = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    return {
        "uptraining_tokens": training["tokens_seen"],
        "uptraining_steps": training["steps"],
        "fraction_of_pretraining": training["fraction_of_pretraining"],
        "heldout_loss_before": first.get("eval_loss"),
        "heldout_loss_after": training["heldout_loss"],
        "train_seconds": _stage_seconds(run_dir, "train"),
    }


def evaluation(run_dir: Path, role: str) -> dict[str, Any]:
    """One model's numbers from a run's evaluation stage (source, converted or uptrained)."""
    data = json.loads((run_dir / "evaluation" / f"{role}.json").read_text())
    result = dict(data["models"][0])
    result["tokens"] = data["tokens"]
    result["eval_seconds"] = _stage_seconds(run_dir, f"evaluate-{role}")
    if role == "uptrained":
        result.update(_training_facts(run_dir))
    return result


def uptrained_run(plan: Plan, model: Model) -> tuple[Model, str]:
    """The uptrained checkpoint whose run holds this model, and its role in that run."""
    if model.fraction:
        return model, "uptrained"
    role = "source" if model.groups is None else "converted"
    for other in plan.models:
        if other.fraction and (model.groups is None or other.conversion == model.conversion):
            return other, role
    raise ValueError(f"the plan uptrains no conversion {model.name}; add one to it")


def record(study: Study, model: Model, result: dict[str, Any]) -> dict[str, Any]:
    """Write --work/evals/NAME.json when its numbers changed; the numbers."""
    from uptrain.checkpoint.atomic import atomic_write_text

    path = study.evaluation_file(model)
    text = json.dumps(result, indent=2) + "\n"
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
        study.log(f"evaluated {model.name}: perplexity {result['perplexity']:.2f}")
    return result


def open_study(args: argparse.Namespace) -> Study:
    from uptrain.errors import UptrainError

    root = Path(args.reference).absolute()
    reference = root / "pretrain" / "final"
    if not (reference / "uptrain.json").is_file() or not (root / "corpus.jsonl").is_file():
        raise UptrainError(f"{root} holds no finished reference model; run scripts/build_reference_model.py")
    if "pretraining_tokens" not in reference_record(reference):
        raise UptrainError(f"{reference}/uptrain.json records no pretraining_tokens; rebuild the reference")
    eval_text = Path(args.eval_text).absolute()
    if not eval_text.is_file():
        raise UptrainError(f"--eval-text {eval_text} does not exist; point it at WikiText-2 raw test")
    return Study(
        reference=reference,
        corpus=root / "corpus.jsonl",
        tokenizer_dir=root / "tokenizer",
        work=Path(args.work).absolute(),
        eval_text=eval_text,
        eval_tokens=args.eval_tokens,
        window=reference_record(reference)["training"]["seq_len"],
        threads=args.threads,
    )


def run_study(study: Study, plan: Plan) -> dict[str, dict[str, Any]]:
    """Run every uptrained checkpoint's pipeline (each resumes or skips what is done), then gather the
    numbers of every checkpoint of the plan; name -> evaluation."""
    for model in plan.models:
        if model.fraction:
            run(study, model)
    results = {}
    for model in plan.models:
        holder, role = uptrained_run(plan, model)
        results[model.name] = record(study, model, evaluation(study.run_dir(holder), role))
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", default="runs/reference", help="scripts/build_reference_model.py --out")
    p.add_argument(
        "--eval-text", default=str(DEFAULT_EVAL_TEXT), help="evaluation text (WikiText-2 raw test)"
    )
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
    given = argv if argv is not None else sys.argv[1:]
    command = " ".join(["python", "scripts/ablations.py", *map(checkout_relative, given)])
    page = write_report(study, plan, results, Path(args.results), Path(args.img), command)
    print(f"wrote {page} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
