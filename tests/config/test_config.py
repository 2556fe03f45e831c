"""The config schema: strict loading, typed --set overrides, documentation, and every shipped YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from uptrain.config import (
    UptrainConfig,
    config_reference_markdown,
    dump_config,
    load_config,
    parse_config,
)
from uptrain.config.schema import describe_fields
from uptrain.errors import UptrainError

ROOT = Path(__file__).resolve().parents[2]
TRAIN_CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml"))
ACCELERATE_CONFIGS = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))
MINIMAL = {"model": {"path": "some/model"}}


def error_of(raw, overrides=()) -> str:
    with pytest.raises(UptrainError) as info:
        parse_config(raw, list(overrides))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_follow_the_paper():
    cfg = parse_config(MINIMAL)
    assert cfg.budget.fraction == 0.05 and cfg.optim.scheduler == "cosine"
    assert cfg.model.convert is None and cfg.distill.enabled is False


@pytest.mark.parametrize(
    "raw, fragments",
    [
        ({**MINIMAL, "optimm": {}}, ["unknown key optimm", "did you mean optim"]),
        ({**MINIMAL, "optim": {"lrr": 1.0}}, ["unknown key optim.lrr", "did you mean optim.lr"]),
        (
            {"model": {"path": "m", "convert": {"groupz": 2}}},
            ["model.convert.groupz", "model.convert.groups"],
        ),
        ({**MINIMAL, "optim": {"lr": "fast"}}, ["optim.lr must be a number", "'fast'"]),
        ({**MINIMAL, "train": {"per_device_batch": 2.5}}, ["train.per_device_batch must be an integer"]),
        ({**MINIMAL, "train": {"per_device_batch": True}}, ["train.per_device_batch must be an integer"]),
        ({**MINIMAL, "train": {"compile": "yes please"}}, ["train.compile must be true or false"]),
        ({**MINIMAL, "train": {"mixed_precision": "fp8"}}, ["train.mixed_precision must be one of auto"]),
        ({**MINIMAL, "data": "wikitext"}, ["data must be a section"]),
        ({**MINIMAL, "optim": {"betas": 0.9}}, ["optim.betas must be a list"]),
        ({**MINIMAL, "budget": {"pretraining_tokens": "2 trillion"}}, ["budget.pretraining_tokens"]),
        ({**MINIMAL, "data": {"dataset": None}}, ["data.dataset is null and data.mix is empty"]),
    ],
)
def test_unknown_keys_and_wrong_types_name_the_key(raw, fragments):
    message = error_of(raw)
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ({}, "exactly one of model.path"),
        ({"model": {"path": "m", "convert": {"source": "s", "groups": 2}}}, "exactly one of model.path"),
        ({"model": {"convert": {"source": "s"}}}, "model.convert.groups is required"),
        ({"model": {"convert": {"source": "s", "target": "mla"}}}, "target mla is not run by uptrain run"),
        ({"model": {"convert": {"groups": 2}}}, "exactly one of model.convert.source or model.tiny"),
        ({"model": {"path": "m", "tiny": {}}}, "model.tiny builds a source"),
        ({**MINIMAL, "budget": {"fraction": 1.5}}, "budget.fraction must be in (0, 1]"),
        ({**MINIMAL, "budget": {"max_steps": 0}}, "budget.max_steps must be > 0"),
        ({**MINIMAL, "data": {"seq_len": 1}}, "data.seq_len must be at least 2"),
        ({**MINIMAL, "distill": {"weight": 2}}, "distill.weight must be in [0, 1]"),
        ({**MINIMAL, "optim": {"betas": [0.9]}}, "optim.betas must be two numbers"),
    ],
)
def test_inconsistent_settings_are_one_line_errors(raw, fragment):
    assert fragment in error_of(raw)


def test_set_overrides_are_typed():
    cfg = parse_config(
        MINIMAL,
        [
            "optim.lr=3e-4",  # YAML 1.1 reads this as a string; the float field takes it
            "train.grad_accum=4",
            "train.compile=true",
            "budget.max_tokens=2M",
            "model.path=007",  # a string field keeps the text
            "eval.split=null",
            "optim.betas=[0.8, 0.9]",
            "model.convert.groups=2",  # creates the section ...
            "model.convert.source=org/model",
            "model.path=null",  # ... and clears the other
        ],
    )
    assert cfg.optim.lr == 3e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.train.grad_accum == 4 and cfg.train.compile is True
    assert cfg.budget.max_tokens == 2_000_000 and cfg.eval.split is None
    assert cfg.optim.betas == [0.8, 0.9]
    assert (
        cfg.model.path is None and cfg.model.convert.groups == 2 and cfg.model.convert.source == "org/model"
    )


@pytest.mark.parametrize(
    "assignment, fragment",
    [
        ("optim.lrr=1", "unknown key optim.lrr; did you mean optim.lr?"),
        ("nosuch.key=1", "unknown key nosuch.key"),
        ("optim.lr", "is not key=value"),
        ("train.grad_accum=two", "train.grad_accum must be an integer"),
    ],
)
def test_bad_overrides(assignment, fragment):
    assert fragment in error_of(MINIMAL, [assignment])


def test_resolved_config_round_trips():
    cfg = parse_config(MINIMAL, ["budget.pretraining_tokens=2T", "optim.lr=3e-4"])
    again = parse_config(yaml.safe_load(dump_config(cfg)))
    assert again == cfg


def test_every_field_is_documented_and_the_reference_is_current():
    rows = describe_fields(UptrainConfig)
    assert len(rows) > 50
    undocumented = [key for key, _, _, doc in rows if len(doc) < 8]
    assert not undocumented
    assert (ROOT / "docs" / "config.md").read_text() == config_reference_markdown(), (
        "docs/config.md is stale: run python -m uptrain.config > docs/config.md"
    )


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_names_its_command(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and f"--config configs/{path.name}" in first, first
    assert "uptrain train" in first or "uptrain run" in first
    cfg = load_config(path)
    assert cfg.output, "every shipped config names its output directory"


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_every_accelerate_config_is_valid_for_accelerate(path):
    from accelerate.commands.config.config_args import ClusterConfig

    first = path.read_text().splitlines()[0]
    assert first.startswith(f"# accelerate launch --config_file configs/accelerate/{path.name} ")
    assert "-m uptrain train --config configs/" in first
    config = ClusterConfig.from_yaml_file(str(path))  # rejects unknown keys
    assert config.num_processes >= 2
    named = first.split("--config configs/")[1].split()[0]
    assert (ROOT / "configs" / named).is_file()


@pytest.mark.parametrize("name", ["fsdp.yaml", "multi-node.yaml", "fsdp2-cpu.yaml"])
def test_fsdp_configs_are_fsdp2_sharding_fully_by_layer_with_sharded_checkpoints(name, monkeypatch):
    """Read as `accelerate launch` reads them: the environment it gives the processes builds an FSDP2
    plugin (FSDP1-only keys such as forward_prefetch would make it raise)."""
    import socket

    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env
    from torch.distributed.fsdp import StateDictType

    with socket.socket() as probe:  # a free port: accelerate checks that the configured one is free
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    path = ROOT / "configs" / "accelerate" / name
    argv = ["--config_file", str(path), "--main_process_port", port, "train.py"]
    args = launch_command_parser().parse_args(argv)
    env = prepare_multi_gpu_env(_validate_launch_command(args)[0])
    for key, value in env.items():
        if key.startswith(("FSDP_", "ACCELERATE_USE_FSDP")):
            monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2
    assert plugin.reshard_after_forward is True  # FSDP2's full shard
    assert plugin.state_dict_type == StateDictType.SHARDED_STATE_DICT
    assert env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"


def test_the_llama2_recipe_is_the_papers_budget():
    from uptrain.train.budget import describe_budget, plan_budget

    cfg = load_config(ROOT / "configs" / "llama2-7b-gqa8-fsdp.yaml")
    budget = plan_budget(cfg.tokens_per_step(8), cfg.budget.pretraining_tokens, cfg.budget.fraction)
    assert budget.steps == 100 * 10**9 // (8 * 4 * 32 * 4096) == 23_841
    assert describe_budget(budget) in (ROOT / "configs" / "llama2-7b-gqa8-fsdp.yaml").read_text()


def test_load_config_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  path: x\n  bogus: 1\n")
    with pytest.raises(UptrainError, match=r"bad.yaml: unknown key model.bogus"):
        load_config(bad)
    bad.write_text("model: [unclosed\n")
    with pytest.raises(UptrainError, match="not valid YAML at line"):
        load_config(bad)
    with pytest.raises(UptrainError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
