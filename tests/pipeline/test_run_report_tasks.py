"""report.tasks in `uptrain run`: checked before anything is written, and mapped onto the settings
every model is scored with."""

import sys

import pytest
from cli_helpers import assert_one_line_error, run_cli
from train_runs import SMALL, TINY, sets

from uptrain.config import load_config
from uptrain.pipeline.evaluation import task_settings


def test_report_tasks_without_lm_eval_is_refused_before_writing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval raises ImportError
    out = tmp_path / "run"
    args = sets(*SMALL, "report.tasks.names=[arc_easy]")
    result = run_cli("run", "--config", TINY, "--output", out, *args)
    assert_one_line_error(result, "pip install 'uptrain-gqa[eval]'")
    assert not out.exists()


def test_report_tasks_become_the_task_settings():
    cfg = load_config(
        TINY,
        [
            "report.tasks.names=[arc_easy, piqa]",
            "report.tasks.num_fewshot=5",
            "report.tasks.limit=0.5",
            "report.tasks.include_path=my_tasks",
            "report.batch_size=3",
        ],
    )
    s = task_settings(cfg)
    assert (s.tasks, s.num_fewshot, s.limit, s.include_path, s.batch_size) == (
        ("arc_easy", "piqa"),
        5,
        0.5,
        "my_tasks",
        3,
    )


def write_choice_task(folder):
    """A 12-question multiple-choice task in lm_eval's YAML, over a jsonl written here."""
    import json

    rows = [
        {
            "question": f"def f{i}(x): return",
            "choices": ["x", "None", "import os", "class A:"],
            "answer": i % 4,
        }
        for i in range(12)
    ]
    data = folder / "choices.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "run_mc.yaml").write_text(
        f"task: run_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
        "output_type: multiple_choice\ntest_split: test\ndoc_to_text: '{{question}}'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: answer\nmetric_list:\n  - metric: acc\n"
    )


@pytest.mark.slow
def test_run_scores_all_three_models_on_report_tasks(tmp_path):
    """Each role's task score in report.json is what lm_eval's own entry point gives that checkpoint."""
    import json

    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager
    from train_runs import reset_accelerate

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    write_choice_task(tasks)
    out = tmp_path / "run"
    reset_accelerate()
    assignments = [
        *SMALL,
        "budget.max_steps=4",
        "report.tasks.names=[run_mc]",
        f"report.tasks.include_path={tasks}",
    ]
    result = run_cli("run", "--config", TINY, "--output", out, *sets(*assignments))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    manager = TaskManager(include_path=str(tasks), include_defaults=False)
    for model, folder in zip(report["models"], ("source", "converted", "final"), strict=True):
        args = {"pretrained": str(out / folder), "tokenizer": str(out / "converted"), "device": "cpu"}
        theirs = lm_eval.simple_evaluate(
            model="hf",
            model_args={**args, "dtype": "float32", "batch_size": 4},
            tasks=["run_mc"],
            task_manager=manager,
        )["results"]["run_mc"]
        assert model["tasks"]["run_mc"]["acc"] == theirs["acc,none"], model["role"]  # same argmax: exact
    assert (out / "tasks.png").is_file()
    assert "| run_mc | acc |" in (out / "report.md").read_text()
