"""One conversion schema: `uptrain convert`'s options are ConvertSection's fields, and a bad setting is
named by each front end in its own words (a flag on the command line, a key in a run config)."""

from __future__ import annotations

import dataclasses

import pytest
import typer
import yaml
from cli_helpers import assert_one_line_error, run_cli
from tiny_models import build_tiny

from uptrain.cli import app
from uptrain.config import ConvertSection
from uptrain.errors import SettingError, UptrainError

CLI_ONLY = {"overwrite", "verify", "plan", "as_json"}  # what to do with OUT (or instead of it)


def convert_command():
    group = typer.main.get_command(app)
    return group.commands["convert"]


def test_every_field_is_an_option_and_every_option_a_field():
    command = convert_command()
    options = {p.name: p for p in command.params if p.param_type_name == "option"}
    fields = {f.name: f for f in dataclasses.fields(ConvertSection) if f.name != "source"}
    assert set(options) - CLI_ONLY == set(fields)
    for name, field in fields.items():
        option = options[name]
        assert f"--{name.replace('_', '-')}" in option.opts, option.opts
        assert option.help == field.metadata["doc"]
        assert option.default == field.default, name
    assert "-g" in options["groups"].opts  # required with target gqa: check_conversion says so
    assert options["sequential"].secondary_opts == ["--no-sequential"]


def test_setting_error_names_the_field_in_each_front_ends_words():
    error = SettingError("<refine_lr> 0 must be > 0; or use <method> mean")
    assert str(error) == "refine_lr 0 must be > 0; or use method mean"
    flags = error.said(lambda f: f"--{f.replace('_', '-')}")
    assert flags == "--refine-lr 0 must be > 0; or use --method mean"
    assert error.said(lambda f: f"model.convert.{f}") == (
        "model.convert.refine_lr 0 must be > 0; or use model.convert.method mean"
    )
    renamed = error.renamed({"refine_lr": "lr"})
    assert isinstance(renamed, UptrainError) and str(renamed) == "lr 0 must be > 0; or use method mean"


@pytest.mark.parametrize(
    "field, value, fragment",
    [("method", "fit+mean", "choose one merge step"), ("dtype", "int8", "'int8'"), ("seed", -1, "between 0")],
)
def test_a_bad_setting_reads_as_a_flag_and_as_a_config_key(tmp_path, field, value, fragment):
    src = build_tiny("llama", tmp_path / "src", kv_heads=4)
    flag = "--" + field.replace("_", "-")
    r = run_cli("convert", src, tmp_path / "out", "-g", "2", flag, str(value))
    assert_one_line_error(r, f"{flag} ", fragment)
    assert f"model.convert.{field}" not in r.output
    config = {
        "model": {"convert": {"source": str(src), "groups": 2, field: value}},
        "data": {"dataset": "builtin:python-docs", "seq_len": 16},
        "budget": {"max_steps": 1},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    r = run_cli("train", "--config", path, "--output", tmp_path / "run")
    assert_one_line_error(r, f"model.convert.{field}", fragment)
    assert flag not in r.output
    assert not (tmp_path / "run").exists()
