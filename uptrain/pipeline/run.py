"""`uptrain run`: the whole recipe from one config, into one output directory, stage by stage.

    convert -> evaluate source -> evaluate converted -> train -> evaluate uptrained -> report -> push

OUTPUT/source/         the source as a checkpoint (model.tiny, or a .gguf file dequantized once)
OUTPUT/converted/      the converted checkpoint
OUTPUT/checkpoints/    training state, OUTPUT/final/ the uptrained checkpoint, OUTPUT/metrics.jsonl
OUTPUT/evaluation/     source.json, converted.json, uptrained.json (same tokens)
OUTPUT/report.json, report.md, training.png, perplexity.png, kv_cache.png
OUTPUT/stages/         one manifest per finished stage (uptrain.pipeline.manifest)

Each stage is skipped when its manifest matches its inputs now, so a rerun (after a kill, a crash or a
change to the config) redoes only what is missing or stale; training resumes from its last checkpoint.
A training run from other inputs is never overwritten: that is an error naming what changed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from uptrain.checkpoint.atomic import atomic_write_text
from uptrain.checkpoint.provenance import read_provenance, update_provenance
from uptrain.config import UptrainConfig, dump_config
from uptrain.config.schema import to_plain
from uptrain.errors import UptrainError
from uptrain.pipeline.evaluation import (
    evaluate_checkpoint,
    evaluation_inputs,
    evaluation_tokens,
    run_tokenizer,
    task_settings,
)
from uptrain.pipeline.manifest import (
    STARTED,
    Manifests,
    Stage,
    changed_inputs,
    checkpoint_identity,
    file_identity,
)
from uptrain.pipeline.model_config import ModelChecked, check_before_writing
from uptrain.report import PLOT_FILES
from uptrain.train.checkpoints import latest_checkpoint
from uptrain.train.run_dir import RESUMABLE_CHANGES, RunDir, changed_keys

ROLES = ("source", "converted", "uptrained")


@dataclass
class RunOutcome:
    root: Path
    statuses: dict[str, str] = field(default_factory=dict)  # stage -> ran | resumed | skipped
    report: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)  # report.json, report.md and the plots
    push: dict[str, Any] | None = None


def check_run_config(cfg: UptrainConfig) -> ModelChecked:
    """`uptrain run`'s door: model.convert (as the run converts it), the model and the tasks."""
    if cfg.model.convert is None:
        raise UptrainError(
            "uptrain run converts first: set model.convert (groups, and source or model.tiny); "
            "to uptrain an already converted checkpoint, use uptrain train"
        )
    from uptrain.evaluate.tasks import check_tasks
    from uptrain.pipeline.student import check_student, run_model_section

    checked = check_student(run_model_section(cfg))
    check_tasks(task_settings(cfg))  # lm_eval installed, task names known, before anything is written
    return checked


def source_identity(cfg: UptrainConfig) -> dict[str, Any]:
    """What the source is, cheaply: the tiny model's spec, a file's or directory's identity, or a Hub id."""
    from uptrain.pipeline.student import source_ref

    if cfg.model.tiny is not None:
        return {"tiny": to_plain(cfg.model.tiny)}
    ref = source_ref(cfg.model)
    path = Path(ref).expanduser()
    if path.is_file():
        return {"file": file_identity(path)}
    if path.is_dir():
        return {"checkpoint": checkpoint_identity(path)}
    return {"hub_id": ref, "revision": cfg.model.convert.revision}


def training_inputs(cfg: UptrainConfig) -> dict[str, Any]:
    """The config as training reads it, without the keys a resumed run may change."""
    flat = {}
    for section, values in to_plain(cfg).items():
        if isinstance(values, dict):
            flat.update({f"{section}.{k}": v for k, v in values.items()})
        else:
            flat[section] = values
    return {k: v for k, v in flat.items() if not k.startswith(RESUMABLE_CHANGES)}


def plan_stages(cfg: UptrainConfig) -> dict[str, Stage]:
    """Every stage with its inputs (and so its digest), before any of them runs."""
    source = source_identity(cfg)
    built = "tiny" in source or source.get("file", {}).get("path", "").lower().endswith(".gguf")
    convert = Stage(
        "convert",
        {"convert": to_plain(cfg.model.convert), "source": source},
        ["converted/uptrain.json", *(["source/uptrain.json"] if built else [])],
    )
    evaluation = evaluation_inputs(cfg)

    def evaluate(role: str, model: Stage) -> Stage:
        inputs = {"role": role, "model": {model.name: model.digest}, **evaluation}
        return Stage(f"evaluate-{role}", inputs, [f"evaluation/{role}.json"])

    train = Stage(
        "train", {"config": training_inputs(cfg), "converted": convert.digest}, ["final/uptrain.json"]
    )
    stages = [convert, evaluate("source", convert), evaluate("converted", convert), train]
    stages.append(evaluate("uptrained", train))
    drawn = [k for k in PLOT_FILES if k != "tasks" or cfg.report.tasks.names] if cfg.report.plots else []
    plots = [PLOT_FILES[k] for k in drawn]
    report = Stage(
        "report",
        {
            "evaluations": {s.name: s.digest for s in stages if s.name.startswith("evaluate")},
            "train": train.digest,
            "plots": cfg.report.plots,
        },
        ["report.json", "report.md", *plots],
    )
    stages.append(report)
    if cfg.push.repo:
        stages.append(Stage("push", {"push": to_plain(cfg.push), "report": report.digest}))
    return {s.name: s for s in stages}


def check_training_conflict(cfg: UptrainConfig, run: RunDir, manifests: Manifests, train: Stage) -> None:
    """Refuse to mix a training run with one from other inputs in the same directory."""
    if not (run.final.exists() or latest_checkpoint(run.checkpoints) is not None):
        return
    recorded = manifests.read("train")
    if recorded is None:  # e.g. the output of `uptrain train`: its config.yaml decides
        changed = changed_keys(run.config.read_text(), dump_config(cfg)) if run.config.is_file() else []
    elif recorded.get("digest") != train.digest:
        changed = changed_inputs(recorded.get("inputs", {}), train.inputs) or ["the inputs"]
    else:
        return
    if changed:
        raise UptrainError(
            f"{run.root} holds training from other inputs ({', '.join(changed[:4])}); choose another "
            f"--output, or delete {run.final.name}/ and {run.checkpoints.name}/ there to train again"
        )


def check_push_possible(cfg: UptrainConfig) -> None:
    """Before hours of work: a push.repo that cannot be pushed to is an error now, not at the end."""
    from huggingface_hub import constants, get_token

    from uptrain.hub.push import check_repo_id

    check_repo_id(cfg.push.repo)
    if constants.is_offline_mode():
        raise UptrainError("push.repo is set but HF_HUB_OFFLINE is too; unset it, or remove push.repo")
    if get_token() is None:
        raise UptrainError(
            "push.repo is set but no Hugging Face token was found; set HF_TOKEN to a token with write "
            "access (or run `hf auth login`), or remove push.repo"
        )


class Pipeline:
    def __init__(
        self, cfg: UptrainConfig, output: Path, console: Console, checked: ModelChecked | None = None
    ) -> None:
        self.checked = checked or check_run_config(cfg)  # trusted by the stages
        self.cfg = cfg
        self.run = RunDir(Path(output).absolute())
        self.console = console
        self.manifests = Manifests(self.run.root)
        self.stages = plan_stages(cfg)
        self.outcome = RunOutcome(self.run.root)
        self._tokens: Any = None
        self._tokenizer: Any = None

    def say(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def stage(self, name: str, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        stage = self.stages[name]
        number = f"[{list(self.stages).index(name) + 1}/{len(self.stages)}]"
        if self.manifests.up_to_date(stage):
            self.say(f"{number} {name}: up to date, skipped")
            self.outcome.statuses[name] = "skipped"
            return self.manifests.read(name) or {}
        self.say(f"{number} {name}")
        started = time.perf_counter()
        extra = work()
        self.outcome.statuses.setdefault(name, "ran")
        return self.manifests.write(stage, seconds=round(time.perf_counter() - started, 3), **extra)

    # the stages

    def convert(self) -> dict[str, Any]:
        from uptrain.pipeline.student import prepare_student, run_model_section

        student = prepare_student(
            run_model_section(self.cfg), self.run, self.say, self.checked.conversion, self.checked.route
        )
        return {"source_path": student.teacher, "converted_path": str(student.path)}

    def tokens(self) -> Any:
        if self._tokens is None:
            self._tokenizer = run_tokenizer(self.cfg, self.run.converted)
            self._tokens = evaluation_tokens(self.cfg, self.run, self._tokenizer)
        return self._tokens

    def evaluate(self, role: str, path: Path) -> dict[str, Any]:
        tokens = self.tokens()
        r, trust = self.cfg.report, self.cfg.model.trust_remote_code
        result = evaluate_checkpoint(
            role, path, tokens, self._tokenizer, trust, r.prompts, r.continuation_tokens
        )
        out = self.run.root / "evaluation" / f"{role}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(result, indent=2) + "\n")
        m = result["models"][0]
        self.say(
            f"  {role}: perplexity {m['perplexity']:,.3f} on {result['tokens']:,} tokens "
            f"({result.get('source')}); KV cache {m['kv_bytes_per_token']:,} B/token"
        )
        if role == "converted":  # the conversion record says how good the conversion alone was
            keys = ("source", "tokens", "window", "stride", "tokens_sha256")
            measured = {"perplexity": m["perplexity"], **{k: result.get(k) for k in keys}}
            update_provenance(path, "evaluation_after_conversion", measured)
        return {"perplexity": m["perplexity"]}

    def train(self) -> dict[str, Any]:
        from uptrain.pipeline.training import run_training

        resumed = latest_checkpoint(self.run.checkpoints) is not None
        self.manifests.write(self.stages["train"], status=STARTED)
        try:
            result = run_training(self.cfg, self.run.root, True, self.console, self.checked)
        except UptrainError as exc:  # a rerun of `uptrain run` is what resumes it
            message = str(exc).replace("rerun with --resume", "rerun the same uptrain run, which resumes")
            raise UptrainError(message, exit_code=exc.exit_code) from None
        self.outcome.statuses["train"] = "resumed" if resumed else "ran"
        return {"steps": result.steps, "tokens": result.tokens}

    def report(self) -> dict[str, Any]:
        from uptrain.report import build_report, draw_plots, read_metrics, write_report

        evaluations = {
            role: json.loads((self.run.root / "evaluation" / f"{role}.json").read_text()) for role in ROLES
        }
        extra = {"output": str(self.run.root), "model": self.cfg.model.convert.source or "model.tiny"}
        report = build_report(evaluations, read_provenance(self.run.final), extra)
        if self.cfg.report.plots:
            drawn = draw_plots(report, read_metrics(self.run.metrics), self.run.root)
            report["plots"] = {name: PLOT_FILES[name] for name in drawn}
        write_report(report, self.run.root)
        return {}

    def push(self) -> dict[str, Any]:
        from uptrain.hub.push import push_checkpoint

        p = self.cfg.push
        report = json.loads((self.run.root / "report.json").read_text())
        result = push_checkpoint(
            self.run.final,
            p.repo,
            private=p.private,
            revision=p.revision,
            commit_message=p.commit_message,
            create_pr=p.create_pr,
            report=report,
        )
        where = result.pr_url or result.commit_url or result.repo_url
        self.say(f"  pushed {len(result.files)} files to {result.repo_id}: {where}")
        return {"repo_id": result.repo_id, "url": where, "files": [name for name, _ in result.files]}

    def __call__(self) -> RunOutcome:
        root = self.run.root
        check_training_conflict(self.cfg, self.run, self.manifests, self.stages["train"])
        check_before_writing(self.cfg, self.checked)
        if "push" in self.stages and not self.manifests.up_to_date(self.stages["push"]):
            check_push_possible(self.cfg)
        root.mkdir(parents=True, exist_ok=True)  # only once the checks passed: a mistake leaves nothing
        atomic_write_text(root / "run.yaml", f"# resolved from uptrain run\n{dump_config(self.cfg)}")
        convert = self.stage("convert", self.convert)
        source = Path(convert["source_path"])
        self.stage("evaluate-source", lambda: self.evaluate("source", source))
        self.stage("evaluate-converted", lambda: self.evaluate("converted", self.run.converted))
        self.stage("train", self.train)
        self.stage("evaluate-uptrained", lambda: self.evaluate("uptrained", self.run.final))
        self.stage("report", self.report)
        if "push" in self.stages:
            self.outcome.push = self.stage("push", self.push)
        self.outcome.report = json.loads((root / "report.json").read_text())
        self.outcome.files = [root / out for out in self.stages["report"].outputs]
        return self.outcome


def run_pipeline(
    cfg: UptrainConfig, output: Path, console: Console | None = None, checked: ModelChecked | None = None
) -> RunOutcome:
    """Run (or resume) the recipe that `cfg` describes into `output`. `checked`: its door's checks
    (check_run_config) when the caller made them (a comparison checks every method first)."""
    threads = torch.get_num_threads()
    if cfg.train.cpu_threads:
        torch.set_num_threads(cfg.train.cpu_threads)
    try:
        return Pipeline(cfg, output, console or Console(soft_wrap=True), checked)()
    finally:
        torch.set_num_threads(threads)
