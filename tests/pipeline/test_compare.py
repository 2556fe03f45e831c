"""uptrain run with compare.methods: one run per method into OUTPUT/<method>/, the same tokens and
budget for each, comparison.md/json/png; greedy continuations (report.prompts) checked against a
greedy loop written here; calibration on the training text leaves the held-out blocks out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli
from train_runs import SMALL, TINY, reset_accelerate, sets

from uptrain.config import parse_config
from uptrain.pipeline.student import run_model_section

PROMPTS = ("The list.sort() method", "A dictionary maps keys to")
COMPARE = (
    *SMALL,
    "budget.max_steps=3",
    "checkpoint.every_steps=0",
    "compare.methods=[mean, fit]",
    "model.convert.calibration_data=builtin:python-docs",
    "model.convert.calibration_tokens=512",
    "model.convert.calibration_seq_len=64",
    f"report.prompts=[{', '.join(PROMPTS)}]",
    "report.continuation_tokens=6",
)


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "run"
    reset_accelerate()
    result = run_cli("run", "--config", TINY, "--output", out, *sets(*COMPARE))
    assert result.exit_code == 0, result.output
    return out, result.output


@torch.no_grad()
def greedy(model_dir: Path, tokenizer_dir: Path, prompt: str, new_tokens: int) -> str:
    """Greedy decoding by hand: argmax of the last position, appended, the whole sequence rescored."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    start = ids.shape[1]
    for _ in range(new_tokens):
        nxt = model(ids).logits[0, -1].argmax()
        ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
        if nxt.item() == tokenizer.eos_token_id:
            break
    return tokenizer.decode(ids[0, start:], skip_special_tokens=True)


def test_each_method_runs_alone_on_the_same_tokens_and_budget(compared):
    out, output = compared
    reports = {m: json.loads((out / m / "report.json").read_text()) for m in ("mean", "fit")}
    assert (
        reports["mean"]["conversion"]["method"] == "mean" and reports["fit"]["conversion"]["method"] == "fit"
    )
    assert reports["mean"]["tokens_sha256"] == reports["fit"]["tokens_sha256"]
    assert reports["mean"]["training"]["tokens_seen"] == reports["fit"]["training"]["tokens_seen"] > 0
    comparison = json.loads((out / "comparison.json").read_text())
    rows = {r["model"]: r for r in comparison["rows"]}
    assert list(rows) == ["source", "mean converted", "mean uptrained", "fit converted", "fit uptrained"]
    for method in ("mean", "fit"):
        ppl = {m["role"]: m["perplexity"] for m in reports[method]["models"]}
        assert rows[f"{method} converted"]["perplexity"] == ppl["converted"]
        assert rows[f"{method} uptrained"]["perplexity"] == ppl["uptrained"]
        assert rows["source"]["perplexity"] == ppl["source"]
        assert rows[f"{method} uptrained"]["vs_source"] == pytest.approx(ppl["uptrained"] / ppl["source"])
        # the conversion record (and the uptrained model's, which carries it) holds that perplexity
        for folder in ("converted", "final"):
            record = json.loads((out / method / folder / "uptrain.json").read_text())
            assert record["evaluation_after_conversion"]["perplexity"] == ppl["converted"], folder
            assert record["evaluation_after_conversion"]["tokens_sha256"] == reports[method]["tokens_sha256"]
    md = (out / "comparison.md").read_text()
    assert "| fit uptrained | 2 |" in md and "![comparison](comparison.png)" in md
    assert (out / "comparison.png").stat().st_size > 1000 and "comparison.md" in output
    assert "Removed shared tensor" not in output


def test_continuations_are_greedy_for_every_model(compared):
    out, _ = compared
    comparison = json.loads((out / "comparison.json").read_text())
    rows = {r["model"]: r for r in comparison["rows"]}
    folders = {
        "source": out / "mean" / "source",
        "fit converted": out / "fit" / "converted",
        "fit uptrained": out / "fit" / "final",
    }
    for name, folder in folders.items():
        got = {c["prompt"]: c["continuation"] for c in rows[name]["continuations"]}
        assert list(got) == list(PROMPTS)
        for prompt in PROMPTS:
            assert got[prompt] == greedy(folder, out / "mean" / "converted", prompt, 6), (name, prompt)
    md = (out / "comparison.md").read_text()
    assert f"Prompt: `{PROMPTS[0]}`" in md and md.count("| mean uptrained |") == 3  # table + 2 prompts


def test_calibration_on_the_training_text_skips_the_heldout_blocks(compared):
    out, _ = compared
    calibration = json.loads((out / "fit" / "converted" / "uptrain.json").read_text())["conversion"][
        "calibration"
    ]
    # 8 held-out blocks of 64 tokens, and one 64-token calibration sequence of margin
    assert calibration["skip_tokens"] == 8 * 64 + 64 and calibration["tokens"] == 512
    cfg = parse_config(
        {"model": {"convert": {"source": "x", "groups": 1, "calibration_data": "other.txt"}}, "data": {}}
    )
    assert run_model_section(cfg).convert.calibration_skip_tokens == 0  # another text: nothing skipped


def test_compare_mistakes_are_one_line_errors_before_anything_is_written(tmp_path):
    cases = [
        (["compare.methods=[mean, mean]"], "compare.methods lists a method twice"),
        (["compare.methods=[mean, bogus]"], "compare.methods: bogus"),
        (["compare.methods=[mean, fit]", "push.repo=me/x"], "push.repo with compare.methods"),
    ]
    for i, (assignments, message) in enumerate(cases):
        out = tmp_path / str(i)
        result = run_cli("run", "--config", TINY, "--output", out, *sets(*SMALL, *assignments))
        assert_one_line_error(result, message)
        assert not out.exists()
