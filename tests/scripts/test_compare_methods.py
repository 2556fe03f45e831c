"""scripts/compare_methods.py on a miniature reference: each method is one `uptrain run` whose evaluation
files the rows repeat, uptrained on 5% of the recorded pre-training as scripts/ablations.py does, and a
second invocation is resumed by the pipeline itself: every stage skipped, nothing rewritten."""

from __future__ import annotations

import json

import pytest
from reference_helpers import MINI_TOKENS_PER_STEP, build_mini_reference, fake_wikitext, load_script


def _perplexity(run, role):
    return json.loads((run / "evaluation" / f"{role}.json").read_text())["models"][0]["perplexity"]


@pytest.mark.slow
def test_rows_come_from_the_pipeline_runs_and_a_rerun_skips_every_stage(tmp_path, capsys):
    steps = 32
    build_mini_reference(tmp_path / "ref", fake_wikitext(tmp_path / "wiki.txt"), steps)
    data = tmp_path / "data"
    data.mkdir()
    fake_wikitext(data / "wikitext-2-raw-test.txt", articles=3)
    results = tmp_path / "results.json"
    argv = [
        "--setup", "reference", "--reference", str(tmp_path / "ref"), "--data", str(data),
        "--work", str(tmp_path / "work"), "--results", str(results), "--threads", "1",
        "--methods", "source", "mean", "--markdown",
    ]  # fmt: skip
    compare = load_script("compare_methods")
    compare.main(argv)
    rows = json.loads(results.read_text())
    runs = tmp_path / "work" / "reference" / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["g1-mean", "g2-mean"]  # H = 8: G = H/4 and 1
    budget = int(steps * MINI_TOKENS_PER_STEP * 0.05) // MINI_TOKENS_PER_STEP * MINI_TOKENS_PER_STEP
    for groups in (2, 1):
        run = runs / f"g{groups}-mean"
        mean, source = rows[f"reference|g{groups}|mean|"], rows[f"reference|g{groups}|source|"]
        assert source["ppl_converted"] == round(_perplexity(run, "source"), 3)
        assert mean["ppl_converted"] == round(_perplexity(run, "converted"), 3)
        assert mean["ppl_uptrained"] == round(_perplexity(run, "uptrained"), 3)
        assert mean["uptrained_tokens"] == budget
        record = json.loads((run / "final" / "uptrain.json").read_text())
        assert record["conversion"]["groups"] == groups and record["conversion"]["method"] == "mean"
        assert record["training"]["tokens_seen"] == budget
    table = capsys.readouterr().out
    assert f"| 1 | mean | {rows['reference|g1|mean|']['ppl_converted']:,.2f} | 1.00x |" in table

    manifests = {p: p.stat().st_mtime_ns for p in runs.rglob("stages/*.json")}
    assert len(manifests) == 2 * 6  # convert, 3 evaluations, train, report per run
    compare.main(argv)
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("stages/*.json")} == manifests
    assert json.loads(results.read_text()) == rows
    for groups in (2, 1):
        log = (runs / f"g{groups}-mean" / "pipeline.log").read_text()
        # each run directory serves source and mean, twice: it ran once, then skipped its six stages 3 times
        assert log.count("up to date, skipped") == 3 * 6
