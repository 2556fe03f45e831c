"""One evaluation schema: `uptrain eval`'s options are EvalCommand's fields (a run config's report section
and the command share them), the flags users type today are all there with today's defaults, and what
typer parses becomes the dataclass the library takes."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import typer

from uptrain.cli import app
from uptrain.cli.options import from_options
from uptrain.config import EvalCommand, ReportSection, TasksSection

ROOT = Path(__file__).resolve().parents[2]
RUN_ONLY = {"prompts", "continuation_tokens", "plots"}  # greedy continuations and plots: `uptrain run`'s


def eval_command():
    return typer.main.get_command(app).commands["eval"]


def options():
    return {p.name: p for p in eval_command().params if p.param_type_name == "option"}


def leaf_fields(cls):
    """name -> field of every setting, nested sections' fields in their place (report.tasks.limit: limit),
    a field renamed on the command line under its option name (tasks.names: tasks)."""
    leaves = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            leaves.update(leaf_fields(hints[f.name]))
        else:
            leaves[f.metadata["cli"].get("name", f.name)] = f
    return leaves


def default_of(f):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def test_every_field_is_an_option_and_every_option_a_field():
    fields = {k: f for k, f in leaf_fields(EvalCommand).items() if k != "models"}
    found = options()
    assert set(found) == set(fields)
    for name, field in fields.items():
        assert f"--{name.replace('_', '-')}" in found[name].opts, found[name].opts
        assert found[name].help == field.metadata["doc"], name
        assert found[name].default == default_of(field), name
    (argument,) = [p for p in eval_command().params if p.param_type_name == "argument"]
    assert argument.name == "models" and argument.required and argument.nargs == -1
    assert argument.help == leaf_fields(EvalCommand)["models"].metadata["doc"]


def test_the_report_section_is_part_of_the_command():
    """Every report setting but the run-only ones is an option of `uptrain eval`, documented alike; the
    defaults differ exactly where the schema says so (dataset: a run's null is its held-out blocks;
    harness: the command scores it unless --no-harness)."""
    report = {k: f for k, f in leaf_fields(ReportSection).items() if k not in RUN_ONLY}
    command = leaf_fields(EvalCommand)
    assert set(report) <= set(command)
    assert [k for k in report if report[k].metadata["doc"] != command[k].metadata["doc"]] == ["dataset"]
    differing = {k: (default_of(report[k]), default_of(command[k])) for k in report}
    differing = {k: v for k, v in differing.items() if v[0] != v[1]}
    assert differing == {"dataset": (None, "Salesforce/wikitext"), "harness": (False, True)}


def test_the_flags_of_the_readme_keep_their_names_and_defaults():
    readme = (ROOT / "README.md").read_text()
    usage = readme.split("### `uptrain eval MODEL [MODEL ...]`", 1)[1].split("```")[1]
    flags = set(re.findall(r"--[a-z-]+", usage))
    found = options()
    spelled = {o for p in found.values() for o in (*p.opts, *p.secondary_opts)}
    assert flags and flags <= spelled, flags - spelled
    today = {
        "dataset": "Salesforce/wikitext",
        "dataset_config": None,
        "split": "test",
        "text_column": "text",
        "window": None,
        "stride": None,
        "batch_size": 4,
        "dtype": "auto",
        "harness": True,
        "detokenize": "none",
        "kv_batch": 1,
        "kv_context": 2048,
        "decode_bench": False,
        "decode_tokens": 32,
        "allow_pickle": False,
    }
    assert {k: found[k].default for k in today} == today
    assert found["harness"].secondary_opts == ["--no-harness"]
    for flag_only in ("decode_bench", "allow_pickle", "trust_remote_code"):
        assert found[flag_only].is_flag and not found[flag_only].secondary_opts, flag_only


def test_a_parsed_command_line_becomes_the_dataclass():
    args = ["a", "b", "--tasks", "arc_easy,piqa", "--num-fewshot", "5", "--limit", "0.5", "--no-harness"]
    args += ["--window", "64", "--kv-batch", "2", "--json", "out.json"]
    params = eval_command().make_context("eval", args).params
    command = from_options(EvalCommand, params, models=list(params["models"]))
    assert command == EvalCommand(
        models=["a", "b"],
        tasks=TasksSection(names=["arc_easy,piqa"], num_fewshot=5, limit=0.5),
        harness=False,
        window=64,
        kv_batch=2,
        json="out.json",
    )
