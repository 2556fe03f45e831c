"""scripts/ablations.py: the plan, and its bookkeeping on a miniature reference (--tiny): every planned
checkpoint built and evaluated once, budgets exact fractions of the recorded pre-training, the report
section written beside other sections, and a second run that skips everything finished."""

from __future__ import annotations

import json

import pytest
import yaml
from reference_helpers import MINI_TOKENS_PER_STEP, build_mini_reference, fake_wikitext, load_script

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_plan_for_eight_heads():
    plan_module = load_script("ablation_plan")
    plan = plan_module.make_plan(8)
    names = {m.name for m in plan.models}
    methods = {
        f"g{g}-{m}{f}"
        for g in (2, 1)
        for m in ("mean", "first", "random")
        for f in ("", "-5pct", "-5pct-seed2")
    }
    fractions = {f"g{g}-mean{f}" for g in (2, 1) for f in ("", "-1pct", "-2.5pct", "-5pct", "-10pct")}
    groups = {f"g{g}-mean{f}" for g in (1, 2, 4, 8) for f in ("", "-5pct")}
    objective = {f"g{g}-mean-5pct{k}" for g in (2, 1) for k in ("", "-kd0.5", "-kd1")}
    lr = {"g1-mean-5pct", "g1-mean-5pct-lr0.0003", "g1-mean-5pct-lr0.003"}
    assert names == {"reference"} | methods | fractions | groups | objective | lr
    assert len(plan.models) == len(names)  # each checkpoint once
    assert plan.main == 0.05
    assert all(plan.experiments[e][0].name == "reference" for e in plan.experiments)  # the baseline row


def _mtimes(work):
    return {p: p.stat().st_mtime_ns for p in work.rglob("*") if p.is_file() and "evals" in p.parts}


@pytest.mark.slow
def test_tiny_study_bookkeeping_and_resume(tmp_path, capsys):
    ablations = load_script("ablations")
    ref_root = tmp_path / "ref"
    steps = 32
    build_mini_reference(ref_root, fake_wikitext(tmp_path / "wiki.txt"), steps)
    eval_text = fake_wikitext(tmp_path / "test.txt", articles=3)
    page = tmp_path / "docs" / "RESULTS.md"
    page.parent.mkdir()
    page.write_text("# Results\n\n## Conversion methods\n\nkept as it is\n")
    argv = [
        "--reference", str(ref_root), "--eval-text", str(eval_text), "--work", str(tmp_path / "work"),
        "--results", str(page), "--img", str(tmp_path / "docs" / "img"), "--eval-tokens", "256", "--tiny",
    ]  # fmt: skip
    ablations.main(argv)
    first = capsys.readouterr().out

    plan = load_script("ablation_plan").make_plan(8, tiny=True)
    work = tmp_path / "work"
    for model in plan.models:
        result = json.loads((work / "evals" / f"{model.name}.json").read_text())
        assert result["perplexity"] > 1 and result["tokens"] == 256
        assert result["kv_heads"] == (model.groups or 8)
        assert result["kv_bytes_per_token"] == 2 * 1 * (model.groups or 8) * 4 * 4  # K+V, 1 layer, fp32
    assert first.count("uptrained ") == sum(1 for m in plan.models if m.fraction)
    assert first.count("evaluated ") == len(plan.models)

    # the budget: 25% of the recorded pre-training tokens, rounded down to whole steps
    pretraining = steps * MINI_TOKENS_PER_STEP
    record = json.loads((work / "uptrained" / "g2-mean-25pct" / "final" / "uptrain.json").read_text())
    expected_steps = int(pretraining * 0.25) // MINI_TOKENS_PER_STEP
    assert record["training"]["steps"] == expected_steps
    assert record["training"]["tokens_seen"] == expected_steps * MINI_TOKENS_PER_STEP
    assert record["training"]["pretraining_tokens"] == pretraining
    assert record["conversion"]["groups"] == 2 and record["conversion"]["method"] == "mean"
    kd = json.loads((work / "uptrained" / "g1-mean-25pct-kd1" / "final" / "uptrain.json").read_text())
    assert kd["training"]["distill"]["weight"] == 1.0
    lr = json.loads((work / "uptrained" / "g1-mean-25pct-lr0.003" / "final" / "uptrain.json").read_text())
    assert lr["training"]["optim"]["lr"] == 0.003 and record["training"]["optim"]["lr"] == 0.001
    for name, seed in (("g2-mean-25pct", 1), ("g2-mean-25pct-seed2", 2)):
        config = yaml.safe_load((work / "uptrained" / name / "config.yaml").read_text())
        assert config["train"]["seed"] == seed
    # the MHA conversion (G = H) is the reference itself
    ref_ppl = json.loads((work / "evals" / "reference.json").read_text())["perplexity"]
    assert json.loads((work / "evals" / "g8-mean.json").read_text())["perplexity"] == pytest.approx(ref_ppl)

    text = page.read_text()
    assert text.startswith("# Results\n\n## Conversion methods\n\nkept as it is\n")
    for heading in ("### (a)", "### (b)", "### (c)", "### (d)", "### (e)", "### Re-running"):
        assert text.count(heading) == 1
    assert f"| MHA reference (no conversion) | {ref_ppl:,.2f} |" in text
    for name in ("methods", "fractions", "groups", "objective"):
        png = tmp_path / "docs" / "img" / f"ablation-{name}.png"
        assert png.read_bytes()[:8] == PNG_SIGNATURE
        assert f"](img/ablation-{name}.png)" in text

    # a second run trains and evaluates nothing, and replaces its section instead of adding one
    before = _mtimes(work)
    ablations.main(argv)
    second = capsys.readouterr().out
    assert "uptrained " not in second and "evaluated " not in second and "converted " not in second
    assert _mtimes(work) == before
    again = page.read_text()
    assert again.count("### (a)") == 1 and again.count("kept as it is") == 1
