"""The model card: YAML metadata and body, from hand-written uptrain.json / report fixtures."""

from __future__ import annotations

import copy
import json
import re

import pytest
import yaml
from cli_helpers import assert_one_line_error, run_cli

from uptrain.errors import UptrainError
from uptrain.hub.card import model_card, write_model_card
from uptrain.hub.card_inputs import load_report, source_license

CONVERTED = {
    "uptrain_version": "0.1.0",
    "created": "2026-01-01T00:00:00+00:00",
    "source": {
        "hub_id": "example-org/mha-1b",
        "revision": "main",
        "commit": "0123456789abcdef0123456789abcdef01234567",
        "config_sha256": "ab" * 32,
        "model_type": "llama",
    },
    "conversion": {
        "heads": 16,
        "kv_heads_before": 16,
        "kv_heads_after": 4,
        "groups": 4,
        "head_dim": 64,
        "layers": 24,
        "method": "mean",
        "seed": 0,
        "dtype": "bfloat16",
    },
}
TRAIN_CONFIG = {"model": "converted", "data": {"dataset": "HuggingFaceFW/fineweb-edu"}, "lr": 1e-4}
UPTRAINED = {
    **CONVERTED,
    "training": {
        "tokens_seen": 100_000_000,
        "steps": 1_526,
        "pretraining_tokens": 2_000_000_000,
        "final_loss": 2.3456,
        "dataset": "HuggingFaceFW/fineweb-edu",
        "datasets": ["data/extra-private.txt"],
        "config": TRAIN_CONFIG,
    },
}
REPORT = {
    "dataset": "Salesforce/wikitext",
    "split": "test",
    "tokens": 4096,
    "window": 1024,
    "stride": 512,
    "models": [
        {"role": "source", "path": "/x/src", "perplexity": 10.0, "kv_bytes_per_token": 98304},
        {"name": "converted", "perplexity": 40.0, "kv_bytes_per_token": 24576},
        {"path": "/x/run/final", "perplexity": 12.5, "kv_bytes_per_token": 24576},
    ],
}
CONFIG = {"model_type": "llama", "dtype": "bfloat16"}


def table_rows(body: str, section: str) -> dict[str, str]:
    """The rows of the table under `## section`, by their first cell."""
    text = body.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}


def split_card(text: str) -> tuple[dict, str]:
    """Front matter parsed with PyYAML (not huggingface_hub), and the body."""
    m = re.match(r"^---\n(.*?)\n---\n(.*)$", text, re.S)
    assert m, text[:200]
    return yaml.safe_load(m.group(1)), m.group(2)


def test_metadata():
    meta, _ = split_card(
        model_card(
            UPTRAINED, repo_id="me/gqa-4", report=REPORT, config=CONFIG, license={"license": "apache-2.0"}
        )
    )
    assert meta["base_model"] == "example-org/mha-1b"
    assert meta["base_model_relation"] == "finetune"
    assert meta["library_name"] == "transformers"
    assert set(meta["tags"]) == {"uptrain", "gqa"}
    assert meta["datasets"] == ["HuggingFaceFW/fineweb-edu"]  # the local file is no Hub dataset
    assert meta["license"] == "apache-2.0"


def test_mqa_tag_and_no_license_when_unknown():
    record = copy.deepcopy(CONVERTED)
    record["conversion"]["kv_heads_after"] = record["conversion"]["groups"] = 1
    meta, body = split_card(model_card(record, config=CONFIG))
    assert set(meta["tags"]) == {"uptrain", "mqa"}
    assert "license" not in meta and "datasets" not in meta
    assert "MQA" in body


def test_body_says_what_was_done_and_what_it_gained():
    _, body = split_card(model_card(UPTRAINED, repo_id="me/gqa-4", report=REPORT, config=CONFIG))
    assert "16 query heads" in body and "16 -> 4" in body and "`mean`" in body
    assert "100M tokens" in body and "1,526 steps" in body
    assert f"{100 * 100_000_000 / 2_000_000_000:.3g}% of the original pre-training compute" in body
    assert "extra-private.txt" in body and "data/extra-private.txt" not in body  # no local paths
    rows = table_rows(body, "Perplexity")
    assert "10.000" in rows["source"] and "1.000x" in rows["source"]
    assert "40.000" in rows["converted"] and f"{40 / 10:.3f}x" in rows["converted"]
    assert "12.500" in rows["uptrained"] and f"{12.5 / 10:.3f}x" in rows["uptrained"]
    assert "Salesforce/wikitext" in body and "window 1,024" in body
    # KV cache: 2 (K,V) x 24 layers x heads x 64 dims x 2 bytes (bf16)
    assert 2 * 24 * 16 * 64 * 2 == 96 * 1024 and 2 * 24 * 4 * 64 * 2 == 24 * 1024
    kv = table_rows(body, "KV cache")
    assert "4x smaller" in body and "96.0 KiB" in kv["source"] and "24.0 KiB" in kv["this model"]
    assert "384.0 MiB" in kv["source"]  # 96 KiB x 4096 tokens
    assert 'from_pretrained("me/gqa-4")' in body


def test_a_lora_run_says_so():
    record = copy.deepcopy(UPTRAINED)
    record["training"]["lora"] = {"rank": 16, "alpha": 32.0, "kv": "full"}
    _, body = split_card(model_card(record, config=CONFIG))
    assert "LoRA adapters of rank 16 (new K/V: full), merged into these plain weights" in body
    _, plain = split_card(model_card(UPTRAINED, config=CONFIG))
    assert "LoRA" not in plain


def test_reproduce_section_holds_the_commands_and_config():
    _, body = split_card(model_card(UPTRAINED, repo_id="me/gqa-4", config=CONFIG))
    assert "uptrain convert example-org/mha-1b converted --groups 4 --method mean --dtype bf16" in body
    block = re.search(r"```yaml\n(.*?)```", body, re.S).group(1)
    assert yaml.safe_load(block) == TRAIN_CONFIG
    record = {**UPTRAINED, "command": "uptrain run --config configs/llama-gqa.yaml"}
    _, body = split_card(model_card(record, config=CONFIG))
    assert "uptrain run --config configs/llama-gqa.yaml" in body


def test_missing_sections_say_not_measured():
    _, body = split_card(model_card(CONVERTED, config={}))
    assert "Not measured" in body
    assert "Uptraining:** none" in body
    assert "4x smaller" in body and "KiB" not in body  # no dtype: only the ratio


def test_fraction_from_a_reference_model_along_the_chain():
    source_record = {**CONVERTED, "pretraining_tokens": 1_000_000}
    record = copy.deepcopy(UPTRAINED)
    record["source"] = {"path": "/somewhere/converted", "uptrain": source_record}
    record["training"] = {"tokens_seen": 50_000}
    meta, body = split_card(model_card(record, config=CONFIG))
    assert meta["base_model"] == "example-org/mha-1b"  # from the source's own uptrain.json
    assert "5% of the original pre-training compute" in body
    assert "/somewhere" not in body and "`converted`" in body


def test_local_source_without_hub_id_has_no_base_model():
    record = copy.deepcopy(CONVERTED)
    record["source"] = {"path": "/home/someone/models/my-mha", "model_type": "llama"}
    meta, body = split_card(model_card(record, config=CONFIG))
    assert "base_model" not in meta and "base_model_relation" not in meta
    assert "`my-mha`" in body and "/home/someone" not in body
    assert "unknown" in body or "Uptraining:** none" in body


def test_license_from_a_local_source_card(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "README.md").write_text("---\nlicense: mit\nlanguage: en\n---\n# source\n")
    record = {**CONVERTED, "source": {"path": str(src)}}
    assert source_license(record) == {"license": "mit"}
    assert source_license({**CONVERTED, "source": {"path": str(tmp_path / "gone")}}) == {}


def test_license_from_the_hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    commit = CONVERTED["source"]["commit"]
    repo = tmp_path / "models--example-org--mha-1b"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "README.md").write_text("---\nlicense: llama2\n---\n")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert source_license(CONVERTED) == {"license": "llama2"}


def test_license_recorded_in_uptrain_json_wins():
    record = copy.deepcopy(CONVERTED)
    record["source"]["license"] = "other"
    record["source"]["license_name"] = "custom"
    meta, _ = split_card(model_card(record, license=source_license(record)))
    assert (meta["license"], meta["license_name"]) == ("other", "custom")


def test_evaluation_section_and_report_merge():
    record = {
        **UPTRAINED,
        "evaluation": {"models": {"source": {"perplexity": 9.0}, "uptrained": {"perplexity": 11.0}}},
    }
    _, body = split_card(model_card(record, report={"models": [{"role": "uptrained", "perplexity": 10.5}]}))
    rows = table_rows(body, "Perplexity")
    assert "9.000" in rows["source"] and "10.500" in rows["uptrained"] and "converted" not in rows


def test_write_model_card_is_atomic_and_parses(tmp_path):
    (tmp_path / "uptrain.json").write_text(json.dumps(UPTRAINED))
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    path = write_model_card(tmp_path, "me/gqa-4", REPORT)
    meta, _ = split_card(path.read_text())
    assert meta["base_model"] == "example-org/mha-1b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "config.json", "uptrain.json"]


def test_record_without_conversion_is_an_error():
    with pytest.raises(UptrainError, match="conversion"):
        model_card({"source": {"hub_id": "a/b"}})


def test_bad_report(tmp_path):
    with pytest.raises(UptrainError, match="does not exist"):
        load_report(tmp_path / "nope.json")
    (tmp_path / "r.json").write_text("{not json")
    with pytest.raises(UptrainError, match="not valid JSON"):
        load_report(tmp_path / "r.json")


def test_cli_report_option_puts_numbers_in_the_card(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "uptrain.json").write_text(json.dumps(UPTRAINED))
    (ckpt / "config.json").write_text(json.dumps(CONFIG))
    (ckpt / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    (tmp_path / "report.json").write_text(json.dumps(REPORT))
    r = run_cli("push", ckpt, "me/gqa-4", "--dry-run", "--report", tmp_path / "report.json")
    assert r.exit_code == 0, r.output
    assert "12.500" in (ckpt / "README.md").read_text()
    assert_one_line_error(
        run_cli("push", ckpt, "me/gqa-4", "--dry-run", "--report", tmp_path / "missing.json"), "report"
    )


def test_run_layout_report_is_found(tmp_path):
    ckpt = tmp_path / "final"
    ckpt.mkdir()
    (ckpt / "uptrain.json").write_text(json.dumps(UPTRAINED))
    (ckpt / "config.json").write_text(json.dumps(CONFIG))
    (ckpt / "model.safetensors").write_bytes(b"")
    (tmp_path / "report.json").write_text(json.dumps(REPORT))
    r = run_cli("push", ckpt, "me/gqa-4", "--dry-run")
    assert r.exit_code == 0, r.output
    assert "40.000" in (ckpt / "README.md").read_text()


def test_secrets_in_the_training_config_are_redacted():
    record = copy.deepcopy(UPTRAINED)
    record["training"]["config"] = {"hub": {"token": "hf_secretValue"}, "wandb_api_key": "k123", "lr": 0.1}
    _, body = split_card(model_card(record))
    block = yaml.safe_load(re.search(r"```yaml\n(.*?)```", body, re.S).group(1))
    assert block == {"hub": {"token": "<redacted>"}, "wandb_api_key": "<redacted>", "lr": 0.1}
    assert "hf_secretValue" not in body and "k123" not in body


def test_a_phi_with_fewer_kv_heads_names_what_serves_its_smaller_cache():
    """vLLM's and SGLang's Phi build K/V with num_attention_heads (their phi.py), so a phi with G < H
    gets the table's serving note; a llama keeps the general sentence."""
    _, phi = split_card(model_card(CONVERTED, config={"model_type": "phi", "dtype": "bfloat16"}))
    assert "serve it with transformers" in phi and "vLLM's and SGLang's Phi" in phi
    assert "vLLM and other servers load it" not in phi
    _, llama = split_card(model_card(CONVERTED, config=CONFIG))
    assert "vLLM and other servers load it as they load the source" in llama
