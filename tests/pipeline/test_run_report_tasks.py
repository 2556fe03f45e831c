"""report.tasks in `uptrain run`: checked before anything is written, and mapped onto the settings
every model is scored with."""

import sys

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
