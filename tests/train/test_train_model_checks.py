"""Settings that only the model can refute -- data.seq_len beyond its positions, train.trainable naming
none of its parameters -- and logging.tensorboard without tensorboard: one line, before any file, in
`uptrain train` and in `uptrain run`."""

from __future__ import annotations

import importlib.util

import pytest
from cli_helpers import assert_one_line_error, run_cli
from tiny_models import build_tiny
from train_runs import TINY, reset_accelerate, sets, train_in_process

from uptrain.checkpoint.meta import meta_model
from uptrain.errors import UptrainError
from uptrain.train.model_checks import check_seq_len, max_positions


@pytest.fixture(autouse=True)
def clean_state():
    reset_accelerate()
    yield
    reset_accelerate()


def _run(out, *assignments):
    return run_cli("run", "--config", TINY, "--output", out, *sets("budget.max_steps=1", *assignments))


@pytest.mark.parametrize("command", ["train", "run"])
def test_seq_len_beyond_the_models_positions_is_refused_before_any_file(tmp_path, command):
    out = tmp_path / "out"
    args = ("model.tiny.max_positions=64", "data.seq_len=128")
    result = train_in_process(out, *args) if command == "train" else _run(out, *args)
    assert_one_line_error(result, "data.seq_len 128", "64 positions", "at most 64")
    assert not out.exists()


@pytest.mark.parametrize("command", ["train", "run"])
def test_trainable_matching_nothing_is_refused_before_any_file(tmp_path, command):
    out = tmp_path / "out"
    args = ("train.trainable=['*.kproj*']",)
    result = train_in_process(out, *args) if command == "train" else _run(out, *args)
    assert_one_line_error(result, "train.trainable", "matches no parameter", "model.layers.0.self_attn")
    assert not out.exists()


@pytest.mark.parametrize("command", ["train", "run"])
def test_tensorboard_missing_is_refused_before_any_file(tmp_path, command, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a)
    )
    out = tmp_path / "out"
    result = (
        train_in_process(out, "logging.tensorboard=true")
        if command == "train"
        else _run(out, "logging.tensorboard=true")
    )
    assert_one_line_error(
        result, "logging.tensorboard", "pip install tensorboard", "uptrain-gqa[tensorboard]"
    )
    assert not out.exists()


def test_a_local_model_path_is_checked_from_its_config(tmp_path):
    from tiny_tokenizer import add_tokenizer

    model = build_tiny("llama", tmp_path / "m", kv_heads=2, vocab_size=320)
    add_tokenizer(model)
    limit = _config(model)["max_position_embeddings"]
    out = tmp_path / "out"
    assignments = ("model.tiny=", "model.convert=", f"model.path={model}", f"data.seq_len={limit + 1}")
    result = train_in_process(out, *assignments)
    assert_one_line_error(result, f"data.seq_len {limit + 1}", f"at most {limit}")
    assert not out.exists()


def _config(directory):
    import json

    return json.loads((directory / "config.json").read_text())


def test_position_keys_of_other_families():
    assert max_positions({"n_positions": 1024}) == 1024  # GPT-2
    assert max_positions({"text_config": {"max_position_embeddings": 4096}}) == 4096
    assert max_positions({}) is None
    check_seq_len(4096, {"max_position_embeddings": 4096})  # exactly the limit is fine
    with pytest.raises(UptrainError, match="at most 4096"):
        check_seq_len(4097, {"max_position_embeddings": 4096})


def test_the_meta_model_has_the_real_models_parameter_names_and_no_memory(tmp_path):
    from transformers import AutoModelForCausalLM

    model = build_tiny("llama", tmp_path / "m", kv_heads=2)
    real = AutoModelForCausalLM.from_pretrained(model)
    meta = meta_model(_config(model))
    assert [(n, p.shape) for n, p in meta.named_parameters()] == [
        (n, p.shape) for n, p in real.named_parameters()
    ]
    assert all(p.device.type == "meta" for p in meta.parameters())
    assert meta_model({"model_type": "no-such-family"}) is None
