"""Bad input to `uptrain train`: one `error:` line naming the fix, a non-zero exit, nothing written."""

from __future__ import annotations

import pytest
from cli_helpers import assert_one_line_error, run_cli
from train_runs import TINY, reset_accelerate, sets, train_in_process


@pytest.fixture(autouse=True)
def clean_state():
    reset_accelerate()
    yield
    reset_accelerate()


def test_unknown_key_in_the_file(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(TINY.read_text().replace("  seq_len: 128", "  seq_len: 128\n  seq_length: 64"))
    result = run_cli("train", "--config", config, "--output", tmp_path / "out")
    assert_one_line_error(result, "c.yaml: unknown key data.seq_length", "did you mean data.seq_len")
    assert not (tmp_path / "out").exists()


def test_wrong_type(tmp_path):
    result = run_cli("train", "--config", TINY, "--output", tmp_path / "out", *sets("train.grad_accum=many"))
    assert_one_line_error(result, "train.grad_accum must be an integer", "'many'")
    assert not (tmp_path / "out").exists()


def test_missing_config_file(tmp_path):
    assert_one_line_error(run_cli("train", "--config", tmp_path / "nope.yaml"), "does not exist", "--config")


def test_missing_model_path(tmp_path):
    result = run_cli(
        "train",
        "--config",
        TINY,
        "--output",
        tmp_path / "out",
        *sets("model.tiny=null", "model.convert=null", f"model.path={tmp_path / 'no-such-model'}"),
    )
    assert_one_line_error(result, "model.path:", "no-such-model", "does not exist")


def test_missing_dataset(tmp_path):
    result = train_in_process(tmp_path / "out", f"data.dataset={tmp_path / 'corpus.txt'}")
    assert_one_line_error(result, "data.dataset:", "corpus.txt does not exist")
    assert not (tmp_path / "out").exists()


def test_a_budget_of_zero_steps(tmp_path):
    result = train_in_process(tmp_path / "out", "budget.max_tokens=500")  # one step takes 4 x 2 x 64 = 512
    assert_one_line_error(result, "budget of 500 tokens gives 0 optimizer steps", "512 tokens per step")
    assert not (tmp_path / "out").exists()


def test_no_output_directory(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(TINY.read_text().replace("output: runs/tiny-cpu\n", ""))
    assert_one_line_error(run_cli("train", "--config", config), "no output directory", "--output")


def test_an_existing_run_needs_resume(tmp_path):
    out = tmp_path / "out"
    (out / "checkpoints" / "step-00000004").mkdir(parents=True)
    (out / "checkpoints" / "step-00000004" / "trainer_state.json").write_text("{}")
    result = train_in_process(out, "budget.max_steps=2")
    assert_one_line_error(result, "already holds a run (step-00000004)", "--resume")
    assert (out / "checkpoints" / "step-00000004" / "trainer_state.json").read_text() == "{}"


def test_resume_with_a_different_config_is_refused(tmp_path):
    out = tmp_path / "out"
    (out / "checkpoints" / "step-00000004").mkdir(parents=True)
    (out / "checkpoints" / "step-00000004" / "trainer_state.json").write_text("{}")
    first = run_cli("train", "--config", TINY, "--print-config", *sets("data.seq_len=64"))
    (out / "config.yaml").write_text(first.output.replace("lr: 0.003", "lr: 0.001"))
    result = train_in_process(out, "budget.max_steps=2", resume=True)
    assert_one_line_error(result, "config differs", "optim.lr", "--output")


def test_print_config_shows_every_field():
    result = run_cli("train", "--config", TINY, "--print-config", *sets("optim.lr=1e-3"))
    assert result.exit_code == 0, result.output
    assert "lr: 0.001" in result.output and "keep_last: 2" in result.output and "tiny:" in result.output


def test_settings_checked_against_other_libraries(tmp_path, monkeypatch):
    result = train_in_process(tmp_path / "a", "optim.scheduler=cosine_annealing")
    assert_one_line_error(result, "optim.scheduler 'cosine_annealing' is not one of", "cosine_with_restarts")

    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a)
    )
    result = train_in_process(tmp_path / "b", "logging.tensorboard=true")
    assert_one_line_error(
        result, "logging.tensorboard needs the tensorboard package", "pip install tensorboard"
    )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
