"""No code runs unless asked, nothing is written outside OUT, and the Hub token appears nowhere.

- A checkpoint whose config.json has an auto_map pointing at Python files beside it (which, imported,
  create a marker file) is refused in one line by convert, inspect, eval and train unless
  --trust-remote-code is given, even when stdin answers "y" to the prompt transformers would show;
  with the flag, eval does run it (so the marker really is the proof).
- Pickled weights are refused unless --allow-pickle, and a pickle that runs code is refused even then.
- Tensor names with '/' or '..', index file names, Hub ids and links beside the weights cannot put or
  take anything outside the places they belong.
- HF_TOKEN set to a fake token appears in no output, log or file of convert, eval, train and push.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli
from push_fixtures import FAKE_TOKEN, all_logs
from safetensors.torch import load_file, save_file
from tiny_models import build_tiny
from tiny_tokenizer import SENTENCES, add_tokenizer
from train_runs import SMALL, TINY, reset_accelerate, sets

from uptrain.checkpoint.snapshot import is_hub_id


def _remote_code_model(path: Path, marker: Path, model_type: str) -> Path:
    """A tiny Llama whose config points (auto_map) at modules that write `marker` when imported."""
    build_tiny("llama", path, kv_heads=8, vocab_size=320)
    add_tokenizer(path)
    config = json.loads((path / "config.json").read_text())
    config.update(
        model_type=model_type,
        architectures=["EvilForCausalLM"],
        auto_map={
            "AutoConfig": "configuration_evil.EvilConfig",
            "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM",
        },
    )
    (path / "config.json").write_text(json.dumps(config))
    touch = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('the checkpoint code ran')\n"
    (path / "configuration_evil.py").write_text(
        touch + f"from transformers import LlamaConfig\n\n\nclass EvilConfig(LlamaConfig):\n"
        f"    model_type = {model_type!r}\n"
    )
    (path / "modeling_evil.py").write_text(
        touch + "from transformers import LlamaForCausalLM\n\n"
        "from .configuration_evil import EvilConfig\n\n\n"
        "class EvilForCausalLM(LlamaForCausalLM):\n    config_class = EvilConfig\n"
    )
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("security")
    marker = root / "MARKER"
    text = root / "text.txt"
    text.write_text(" ".join(SENTENCES * 8))
    return {
        "custom": _remote_code_model(root / "custom", marker, "evil"),  # transformers lacks the type
        "native": _remote_code_model(root / "native", marker, "llama"),  # llama, with an auto_map too
        "marker": marker,
        "text": text,
    }


@pytest.fixture(autouse=True)
def no_marker(models):
    models["marker"].unlink(missing_ok=True)
    yield
    models["marker"].unlink(missing_ok=True)


@pytest.fixture
def modules_cache(tmp_path, monkeypatch):
    """Where transformers copies a trusted checkpoint's modules (instead of ~/.cache)."""
    import transformers.dynamic_module_utils as dynamic

    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "modules"))


def _train(out, *assignments):
    return ["train", "--config", TINY, "--output", out, *sets(*SMALL, *assignments)]


@pytest.mark.parametrize(
    "command",
    [
        lambda m, out: ["convert", m["custom"], out, "-g", "2"],
        lambda m, out: ["inspect", m["custom"]],
        lambda m, out: ["eval", m["custom"], "--dataset", m["text"]],
        lambda m, out: _train(out, "model.tiny=null", "model.convert=null", f"model.path={m['custom']}"),
        lambda m, out: _train(out, "distill.enabled=true", f"distill.teacher={m['custom']}"),
    ],
    ids=["convert", "inspect", "eval", "train", "train-teacher"],
)
def test_checkpoint_code_does_not_run_without_the_flag(models, tmp_path, command):
    reset_accelerate()
    out = tmp_path / "out"
    result = run_cli(*command(models, out), input="y\ny\n")  # what a user would answer to a prompt
    line = assert_one_line_error(result)
    assert "is not supported" in line or "--trust-remote-code" in line, line
    assert not models["marker"].exists(), "the checkpoint's code ran"
    assert not out.exists()


def test_eval_runs_checkpoint_code_only_with_the_flag(models, modules_cache):
    args = ["eval", models["custom"], "--dataset", models["text"], "--no-harness", "--max-tokens", "64"]
    assert_one_line_error(run_cli(*args), "--trust-remote-code")
    assert not models["marker"].exists()
    trusted = run_cli(*args, "--trust-remote-code")
    assert trusted.exit_code == 0, trusted.output
    assert models["marker"].exists()  # the flag reached from_pretrained: the code did run


def test_train_flag_sets_the_config_key():
    shown = run_cli("train", "--config", TINY, "--print-config", "--trust-remote-code")
    plain = run_cli("train", "--config", TINY, "--print-config")
    assert "trust_remote_code: true" in shown.output and "trust_remote_code: false" in plain.output


def test_a_built_in_model_type_loads_with_its_own_class_and_the_output_drops_the_code(models, tmp_path):
    """auto_map beside a model_type transformers has: convert --verify loads both sides with the built-in
    class, and OUT neither points at nor carries the Python files."""
    out = tmp_path / "out"
    result = run_cli("convert", models["native"], out, "-g", "2", "--verify")
    assert result.exit_code == 0, result.output
    assert not models["marker"].exists()
    assert "auto_map" not in json.loads((out / "config.json").read_text())
    assert not list(out.glob("*.py"))


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "the pickle ran"))


def test_pickled_weights_need_the_flag_and_code_in_a_pickle_never_runs(models, tmp_path):
    marker = models["marker"]
    src = tmp_path / "pickled"
    build_tiny("llama", src, kv_heads=8)
    state = load_file(src / "model.safetensors")
    (src / "model.safetensors").unlink()
    torch.save({**state, "x": _RunsCode(marker)}, src / "pytorch_model.bin")
    for command in (
        ["convert", src, tmp_path / "out", "-g", "2"],
        ["inspect", src],
        ["eval", src, "--dataset", models["text"]],
    ):
        assert_one_line_error(run_cli(*command), "pickled", "--allow-pickle")
    assert not marker.exists()
    # with --allow-pickle, torch.load(weights_only=True) still refuses to build arbitrary objects
    result = run_cli("convert", src, tmp_path / "out", "-g", "2", "--allow-pickle")
    assert_one_line_error(result, "cannot read pickled weights", "re-download")
    assert not marker.exists() and not (tmp_path / "out").exists()
    # plain tensors load with the flag
    torch.save(state, src / "pytorch_model.bin")
    assert run_cli("convert", src, tmp_path / "out", "-g", "2", "--allow-pickle").exit_code == 0


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_tensor_names_with_slashes_and_dots_stay_inside_the_output_files(tmp_path):
    src = build_tiny("llama", tmp_path / "src", kv_heads=8)
    state = load_file(src / "model.safetensors")
    odd = ["../../escaped.weight", "a/b/../../../../c.weight", "/abs/path.weight", "..", "model.safetensors"]
    for i, name in enumerate(odd):
        state[name] = torch.full((2,), float(i))
    save_file(state, src / "model.safetensors", metadata={"format": "pt"})
    before = _files(tmp_path)
    result = run_cli("convert", src, tmp_path / "out", "-g", "2")
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    added = _files(tmp_path) - before
    written = ("model.safetensors", "config.json", "generation_config.json", "uptrain.json")
    assert added == {"out"} | {f"out/{n}" for n in written}
    converted = load_file(out / "model.safetensors")
    for i, name in enumerate(odd):  # the names are data inside the file, nothing more
        assert torch.equal(converted[name], torch.full((2,), float(i)))


@pytest.mark.parametrize("name", ["/etc/passwd", "..", "sub/x.safetensors", ".hidden.safetensors", "a\\b"])
def test_index_file_names_that_are_not_plain_are_refused(tmp_path, name):
    src = build_tiny("llama", tmp_path / "src", kv_heads=8, max_shard_size="60KB")
    index = src / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"][next(iter(data["weight_map"]))] = name
    index.write_text(json.dumps(data))
    before = _files(tmp_path)
    assert_one_line_error(run_cli("convert", src, tmp_path / "out", "-g", "2"), "not a plain file name")
    assert _files(tmp_path) == before


def test_a_side_file_linking_out_of_the_source_is_refused(tmp_path):
    src = build_tiny("llama", tmp_path / "src", kv_heads=8)
    secret = tmp_path / "credentials"
    secret.write_text("aws_secret_access_key = not-for-the-hub")
    (src / "tokenizer_config.json").symlink_to(secret)
    result = run_cli("convert", src, tmp_path / "out", "-g", "2")
    assert_one_line_error(result, "tokenizer_config.json is a link", "outside the source", "copy the file")
    assert not (tmp_path / "out").exists()
    # a link inside SRC is fine, and OUT holds a plain copy
    (src / "tokenizer_config.json").unlink()
    (src / "real.json").write_text('{"model_max_length": 128}')
    (src / "tokenizer_config.json").symlink_to(src / "real.json")
    assert run_cli("convert", src, tmp_path / "out", "-g", "2").exit_code == 0
    copied = tmp_path / "out" / "tokenizer_config.json"
    assert not copied.is_symlink() and copied.read_text() == '{"model_max_length": 128}'


@pytest.mark.parametrize(
    "ref", ["../evil", "a/../../b", "/etc/passwd", "a/b/c", "~/x", ".hidden", "owner/name.", "a b", "x" * 97]
)
def test_path_like_or_malformed_hub_ids_are_not_hub_ids(ref):
    assert not is_hub_id(ref)


@pytest.mark.slow
def test_the_token_appears_in_no_output_log_or_file(tmp_path, monkeypatch):
    """convert, eval, train and push (dry run and to the local Hub) with HF_TOKEN set; every line they
    print or log, and every byte they write, is searched for it."""
    from hub_server import FakeHub
    from huggingface_hub import constants

    import uptrain.checkpoint.retry
    from uptrain.checkpoint.retry import RetryPolicy

    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    src = build_tiny("llama", tmp_path / "src", kv_heads=8, vocab_size=320)
    add_tokenizer(src)
    text = tmp_path / "text.txt"
    text.write_text(" ".join(SENTENCES * 8))
    outputs = []
    with all_logs() as logs:
        for command in (
            ["convert", src, tmp_path / "gqa", "-g", "2", "--verify"],
            ["eval", src, tmp_path / "gqa", "--dataset", text, "--json", tmp_path / "report.json"],
            _train(tmp_path / "run", "budget.max_steps=2", "eval.blocks=2", "data.seq_len=32"),
            ["push", tmp_path / "gqa", "tester/tiny-gqa", "--dry-run", "--report", tmp_path / "report.json"],
        ):
            reset_accelerate()
            result = run_cli(*command)
            assert result.exit_code == 0, result.output
            outputs.append(result.output)
        with FakeHub(token=FAKE_TOKEN) as hub:
            monkeypatch.setattr(constants, "ENDPOINT", hub.url)
            monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
            monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
            monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-stored-token"))
            monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "agents.json"))
            monkeypatch.setattr(
                uptrain.checkpoint.retry, "DEFAULT_RETRY", RetryPolicy(attempts=3, base_delay=0.001)
            )
            hub.fail("commit", 500)
            for directory in (tmp_path / "gqa", tmp_path / "run" / "final"):
                result = run_cli("push", directory, f"tester/{directory.name}")
                assert result.exit_code == 0, result.output
                outputs.append(result.output)
            uploaded = [blob for repo in hub.repos.values() for blob in repo.refs["main"].values()]
            assert f"Bearer {FAKE_TOKEN}" in hub.authorization  # it was used, so it was there to leak
    assert len(uploaded) > 10 and logs.lines
    for text_out in [*outputs, *logs.lines]:
        assert FAKE_TOKEN not in text_out
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "metrics.jsonl" for p in written) and any(p.name == "README.md" for p in written)
    for path in written:
        assert FAKE_TOKEN.encode() not in path.read_bytes(), path
    for blob in uploaded:
        assert FAKE_TOKEN.encode() not in blob
