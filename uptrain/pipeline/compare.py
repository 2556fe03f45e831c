"""`uptrain run` with compare.methods: one run per conversion method, then the comparison.

OUTPUT/<method>/        each method's own run (as `uptrain run` with model.convert.method = method:
                        source, converted, final/, evaluation/, report.md, resumable stage by stage)
OUTPUT/comparison.json, comparison.md, comparison.png

The runs differ only in the method: same source, data, budget, seed and evaluation tokens. Every
method is checked before any run starts; a rerun resumes each run where it stopped (its stages'
manifests) and rewrites the comparison.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from uptrain.checkpoint.atomic import atomic_write_text
from uptrain.comparison import build_comparison, write_comparison
from uptrain.config import CompareSection, UptrainConfig, dump_config
from uptrain.errors import UptrainError
from uptrain.pipeline.model_config import ModelChecked
from uptrain.pipeline.run import RunOutcome, check_run_config, run_pipeline
from uptrain.report import read_metrics


@dataclass
class ComparisonOutcome:
    root: Path
    runs: dict[str, RunOutcome] = field(default_factory=dict)  # method -> its run
    comparison: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


def method_folder(method: str) -> str:
    """OUTPUT/<this>/ holds the run of `method` (fit+refine -> fit+refine; no path separators)."""
    return method.replace("/", "_").replace(" ", "")


@dataclass(frozen=True)
class MethodRun:
    cfg: UptrainConfig  # the run config with model.convert.method = the method
    checked: ModelChecked  # its door's checks, trusted by its run


def method_configs(cfg: UptrainConfig, output: Path) -> dict[str, MethodRun]:
    """Each method's run config, every one checked once: nothing is written before all pass."""
    methods = cfg.compare.methods
    if cfg.model.convert is None:
        check_run_config(cfg)  # names the missing model.convert
    if len(set(methods)) != len(methods):
        raise UptrainError("compare.methods lists a method twice; list each once")
    if cfg.push.repo:
        raise UptrainError(
            "push.repo with compare.methods: which model to push is ambiguous; push one with "
            "uptrain push OUTPUT/<method>/final, or remove push.repo"
        )
    configs = {}
    for method in methods:
        convert = dataclasses.replace(cfg.model.convert, method=method)
        sub = dataclasses.replace(
            cfg,
            model=dataclasses.replace(cfg.model, convert=convert),
            compare=CompareSection(),
            output=str(output / method_folder(method)),
        )
        try:
            configs[method] = MethodRun(sub, check_run_config(sub))
        except UptrainError as exc:
            raise UptrainError(f"compare.methods: {method}: {exc}") from None
    return configs


def run_comparison(cfg: UptrainConfig, output: Path, console: Console | None = None) -> ComparisonOutcome:
    """Run (or resume) every method's run into OUTPUT/<method>/, then write the comparison."""
    console = console or Console(soft_wrap=True)
    output = Path(output).absolute()
    configs = method_configs(cfg, output)
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "run.yaml", f"# resolved from uptrain run\n{dump_config(cfg)}")
    outcome = ComparisonOutcome(output)
    for i, (method, sub) in enumerate(configs.items()):
        console.print(f"== method {i + 1}/{len(configs)}: {method} -> {sub.cfg.output}", highlight=False)
        outcome.runs[method] = run_pipeline(sub.cfg, Path(sub.cfg.output), console, sub.checked)
    reports = {m: json.loads((r.root / "report.json").read_text()) for m, r in outcome.runs.items()}
    metrics = {m: read_metrics(r.root / "metrics.jsonl") for m, r in outcome.runs.items()}
    outcome.comparison = build_comparison(reports)
    outcome.files = write_comparison(outcome.comparison, metrics, output, cfg.report.plots)
    return outcome
