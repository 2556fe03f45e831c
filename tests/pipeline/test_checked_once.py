"""Each command checks its settings once, at the door: G (check_conversion of a ConvertSection),
refine_lr (the refine step's check), data.seq_len (check_seq_len) and an evaluation option (eval's
check_settings, run's check_tasks) are each validated once per command, whatever layers the settings
pass through afterwards (convert_checkpoint, prepare_student, run_training). G's route (plan_route) is
planned once by the pipeline, at the door, and the conversion uses that one (convert.plan counted too)."""

from __future__ import annotations

import importlib
from collections import Counter

import pytest
from cli_helpers import run_cli
from tiny_models import build_tiny
from tiny_tokenizer import SENTENCES, add_tokenizer
from train_runs import SMALL, TINY, reset_accelerate, sets

from uptrain.config.conversion import ConvertSection
from uptrain.config.methods import Refine
from uptrain.errors import UptrainError

# where each check is looked up by its callers (a module attribute each, patched in all of them)
CHECKS = {
    "groups": (
        "check_conversion",
        ["uptrain.convert.checked", "uptrain.convert.convert", "uptrain.pipeline.student"],
    ),
    "seq_len": ("check_seq_len", ["uptrain.train.model_checks", "uptrain.pipeline.model_config"]),
    "eval": ("check_settings", ["uptrain.evaluate.checks", "uptrain.evaluate", "uptrain.evaluate.report"]),
    "tasks": ("check_tasks", ["uptrain.evaluate.tasks"]),
    "route": (
        "plan_route",
        [
            "uptrain.architectures.route",
            "uptrain.pipeline.student",
            "uptrain.pipeline.model_config",
            "uptrain.convert.plan",
        ],
    ),
}
REFINE = (
    "--refine-steps",
    "1",
    "--refine-tokens",
    "64",
    "--refine-batch-tokens",
    "64",
    "--refine-lr",
    "0.01",
)
CALIBRATION = ("--calibration-tokens", "128", "--calibration-seq-len", "64")


class Reached(UptrainError):
    pass


@pytest.fixture
def counts(monkeypatch):
    """How often each check ran with settings to check (a checked conversion passed on is not counted)."""
    seen: Counter = Counter()

    def counted(what, original):
        def check(*args, **kwargs):
            if what != "groups" or isinstance(args[0], ConvertSection):
                seen[what] += 1
            return original(*args, **kwargs)

        return check

    for what, (name, modules) in CHECKS.items():
        original = getattr(importlib.import_module(modules[0]), name)
        for module in modules:
            monkeypatch.setattr(importlib.import_module(module), name, counted(what, original))
    refine_check = Refine.check
    monkeypatch.setattr(Refine, "check", lambda self: (seen.update(["refine_lr"]), refine_check(self))[1])
    return seen


@pytest.fixture
def model(tmp_path):
    src = build_tiny("llama", tmp_path / "src", kv_heads=4, vocab_size=320)
    add_tokenizer(src)
    text = tmp_path / "text.txt"
    text.write_text("\n".join(SENTENCES * 20))
    return src, text


def test_uptrain_convert_checks_once(counts, model, tmp_path):
    src, text = model
    args = ("-g", "2", "--method", "fit+refine", "--calibration-data", text, *CALIBRATION, *REFINE)
    result = run_cli("convert", src, tmp_path / "out", *args)
    assert result.exit_code == 0, result.output
    assert (counts["groups"], counts["refine_lr"]) == (1, 1)


def test_uptrain_eval_checks_once(counts, model):
    src, text = model
    result = run_cli("eval", src, "--dataset", text, "--window", "32", "--stride", "32")
    assert result.exit_code == 0, result.output
    assert counts["eval"] == 1


REFINED_RUN = (
    *SMALL,
    "model.convert.method=fit+refine",
    "model.convert.calibration_data=builtin:python-docs",
    "model.convert.calibration_tokens=128",
    "model.convert.calibration_seq_len=64",
    "model.convert.refine_steps=1",
    "model.convert.refine_tokens=64",
    "model.convert.refine_batch_tokens=64",
)


def stop_at_the_training_loop(monkeypatch) -> None:
    import uptrain.pipeline.training as training

    def stop(*args, **kwargs):
        raise Reached("the checks are done; the test stops at the training loop")

    monkeypatch.setattr(training, "train", stop)
    reset_accelerate()


@pytest.mark.parametrize("command", ["train", "run"])
def test_uptrain_train_and_run_check_once(command, counts, tmp_path, monkeypatch):
    """Up to the training loop (stopped there): the door, the conversion, and for run its stages."""
    stop_at_the_training_loop(monkeypatch)
    result = run_cli(command, "--config", TINY, "--output", tmp_path / "out", *sets(*REFINED_RUN))
    assert "the test stops at the training loop" in result.output, result.output
    assert (counts["groups"], counts["refine_lr"], counts["seq_len"]) == (1, 1, 1)
    assert counts["route"] == 1
    if command == "run":
        assert counts["tasks"] == 1


def test_uptrain_run_compare_checks_each_method_once(counts, tmp_path, monkeypatch):
    """compare.methods: each method's run config is checked once, before any run starts, and its run
    trusts that (the first run is stopped at its training loop)."""
    stop_at_the_training_loop(monkeypatch)
    methods = sets(*SMALL, "compare.methods=[mean, first]")
    result = run_cli("run", "--config", TINY, "--output", tmp_path / "out", *methods)
    assert "the test stops at the training loop" in result.output, result.output
    assert (counts["groups"], counts["tasks"], counts["route"], counts["seq_len"]) == (2, 2, 2, 1)
