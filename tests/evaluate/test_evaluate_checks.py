"""check_settings, the door of an evaluation: each mistake is one line naming the setting, and what it
hands on has the task names split at commas (`--tasks a,b`)."""

import pytest

from uptrain.config import EvalSettings, TasksSection
from uptrain.errors import SettingError, UptrainError, as_flag
from uptrain.evaluate import checks


@pytest.fixture
def seen_tasks(monkeypatch):
    """lm_eval's task check replaced by a record of what it was asked."""
    seen = []
    monkeypatch.setattr(checks, "check_tasks", seen.append)
    return seen


def test_task_names_are_split_at_commas_and_checked_with_the_batch(seen_tasks):
    settings = EvalSettings(tasks=TasksSection(names=["arc_easy, piqa", "hellaswag"], limit=3), batch_size=2)
    checked = checks.check_settings(settings)
    assert checked.tasks.names == ["arc_easy", "piqa", "hellaswag"]
    assert settings.tasks.names == ["arc_easy, piqa", "hellaswag"]  # the caller's object is left alone
    (asked,) = seen_tasks
    assert (asked.tasks, asked.limit, asked.batch_size) == (("arc_easy", "piqa", "hellaswag"), 3, 2)


@pytest.mark.parametrize("name", ["batch_size", "kv_batch", "kv_context", "decode_tokens"])
def test_counts_must_be_at_least_one(seen_tasks, name):
    with pytest.raises(SettingError) as error:
        checks.check_settings(EvalSettings(**{name: 0}))
    assert error.value.said(as_flag) == f"{as_flag(name)} 0 must be at least 1"


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"dtype": "int4"}, "'int4' is not one of"),
        ({"device": "tpu"}, "'tpu' is not a torch device"),
        ({"detokenize": "moses"}, "moses"),
    ],
)
def test_values_the_library_cannot_use(seen_tasks, changes, fragment):
    with pytest.raises(UptrainError, match=fragment):
        checks.check_settings(EvalSettings(**changes))


def test_include_path_must_be_a_folder(seen_tasks, tmp_path):
    missing = tmp_path / "tasks"
    with pytest.raises(SettingError) as error:
        checks.check_settings(EvalSettings(tasks=TasksSection(include_path=str(missing))))
    assert (
        error.value.said(as_flag) == f"--include-path {missing} is not a folder; name the folder of task YAML"
    )
    missing.mkdir()
    checks.check_settings(EvalSettings(tasks=TasksSection(include_path=str(missing))))
