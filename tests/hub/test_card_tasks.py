"""lm_eval task scores in `uptrain run`'s report (JSON, Markdown, tasks.png) and in the model card
(a table, and the Hub's model-index of the uptrained model)."""

import yaml

from uptrain.hub.card import model_card
from uptrain.report import draw_plots, report_markdown

RECORD = {"conversion": {"heads": 8, "kv_heads_before": 8, "kv_heads_after": 2, "method": "mean"}}
TASKS = {
    "source": {"arc_easy": {"acc": 0.61, "acc_stderr": 0.01, "acc_norm": 0.55}, "piqa": {"acc": 0.7}},
    "converted": {"arc_easy": {"acc": 0.31, "acc_stderr": 0.012, "acc_norm": 0.29}, "piqa": {"acc": 0.52}},
    "uptrained": {"arc_easy": {"acc": 0.5, "acc_stderr": 0.011, "acc_norm": 0.47}, "piqa": {"acc": 0.66}},
}


def report():
    models = [
        {"role": r, "perplexity": p, "kv_bytes_per_token": b, "kv_heads": h, "tasks": TASKS[r]}
        for r, p, b, h in (
            ("source", 10.0, 1024, 8),
            ("converted", 90.0, 256, 2),
            ("uptrained", 12.0, 256, 2),
        )
    ]
    ratio = {"converted_over_source": 9.0, "uptrained_over_converted": 12 / 90, "uptrained_over_source": 1.2}
    return {
        "models": models,
        "perplexity_ratio": ratio,
        "tokens": 100,
        "settings": {"num_fewshot": 0, "limit": 50},
        "conversion": RECORD["conversion"],
    }


def test_report_markdown_and_plot_carry_task_scores(tmp_path):
    data = report()
    text = report_markdown(data)
    # a row per task with its main metric (acc_norm over acc), a column per role, stderr beside it
    assert "| task | metric | source | converted | uptrained |" in text
    assert "| arc_easy | acc_norm | 0.5500 | 0.2900 | 0.4700 |" in text
    assert "| piqa | acc | 0.7000 | 0.5200 | 0.6600 |" in text
    assert "Few-shot: 0, at most 50 examples per task." in text
    plots = draw_plots(data, [], tmp_path)
    assert plots["tasks"] == tmp_path / "tasks.png"
    assert (tmp_path / "tasks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_without_tasks_draws_no_task_plot(tmp_path):
    data = report()
    for m in data["models"]:
        m.pop("tasks")
    assert "tasks" not in draw_plots(data, [], tmp_path)
    assert "Downstream tasks" not in report_markdown(data)


def test_card_has_task_table_and_model_index():
    card = model_card(RECORD, repo_id="me/tiny-gqa", report=report())
    front = yaml.safe_load(card.split("---\n")[1])
    index = front["model-index"][0]
    assert index["name"] == "tiny-gqa"
    got = {(r["dataset"]["type"], m["type"]): m["value"] for r in index["results"] for m in r["metrics"]}
    assert got == {("arc_easy", "acc_norm"): 0.47, ("piqa", "acc"): 0.66}  # the uptrained model's
    assert "## Downstream tasks" in card
    assert "| arc_easy | acc_norm | 0.5500 ± " not in card  # acc_norm has no stderr here
    assert "| arc_easy | acc_norm | 0.5500 | 0.2900 | 0.4700 |" in card


def test_card_without_tasks_has_no_model_index():
    data = report()
    for m in data["models"]:
        m.pop("tasks")
    card = model_card(RECORD, repo_id="me/tiny-gqa", report=data)
    assert "model-index" not in card and "Downstream tasks" not in card
