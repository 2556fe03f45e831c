"""Every bad input to convert: one line naming the fix, a non-zero exit, and nothing written."""

import errno
import json
import os
import shutil

import pytest
from cli_helpers import assert_one_line_error, run_cli


def nothing_written(parent, name="out"):
    leftovers = [p.name for p in parent.iterdir() if p.name == name or p.name.startswith(f".{name}.uptrain-")]
    return leftovers == []


@pytest.mark.parametrize(
    "groups,fragment",
    [(3, "choose one of [1, 2, 4, 8]"), (16, "choose one of"), (0, "choose one of"), (-2, "choose one of")],
)
def test_invalid_groups(tiny_llama, tmp_path, groups, fragment):
    r = run_cli("convert", tiny_llama, tmp_path / "out", "--groups", str(groups))
    assert_one_line_error(r, f"--groups {groups}", fragment)
    assert nothing_written(tmp_path)


def test_unsupported_model_type_lists_supported(tiny_llama, tmp_path):
    config = json.loads((tiny_llama / "config.json").read_text())
    config["model_type"] = "opt"
    (tiny_llama / "config.json").write_text(json.dumps(config))
    r = run_cli("convert", tiny_llama, tmp_path / "out", "-g", "1")
    assert_one_line_error(r, "'opt' is not supported", "llama", "qwen2", "gpt_neox", "phi")
    assert nothing_written(tmp_path)


def test_missing_config(tiny_llama, tmp_path):
    (tiny_llama / "config.json").unlink()
    assert_one_line_error(run_cli("convert", tiny_llama, tmp_path / "out", "-g", "1"), "no config.json")
    assert nothing_written(tmp_path)


def test_missing_weights(tiny_llama, tmp_path):
    for f in tiny_llama.glob("*.safetensors*"):
        f.unlink()
    assert_one_line_error(run_cli("convert", tiny_llama, tmp_path / "out", "-g", "1"), "no weights")
    assert nothing_written(tmp_path)


def test_index_names_missing_shard(tiny_llama, tmp_path):
    victim = sorted(tiny_llama.glob("model-*.safetensors"))[1]
    victim.unlink()
    r = run_cli("convert", tiny_llama, tmp_path / "out", "-g", "1")
    assert_one_line_error(r, victim.name, "missing")
    assert nothing_written(tmp_path)


def test_truncated_shard(tiny_llama, tmp_path):
    victim = sorted(tiny_llama.glob("model-*.safetensors"))[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    r = run_cli("convert", tiny_llama, tmp_path / "out", "-g", "1")
    assert_one_line_error(r, victim.name, "truncated or corrupt")
    assert nothing_written(tmp_path)


def test_corrupt_header(tiny_llama, tmp_path):
    victim = sorted(tiny_llama.glob("model-*.safetensors"))[0]
    victim.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    assert_one_line_error(run_cli("convert", tiny_llama, tmp_path / "out", "-g", "1"), "corrupt")
    assert nothing_written(tmp_path)


def test_index_with_path_traversal_is_refused(tiny_llama, tmp_path):
    index = tiny_llama / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    first = next(iter(data["weight_map"]))
    data["weight_map"][first] = "../../etc/passwd"
    index.write_text(json.dumps(data))
    assert_one_line_error(
        run_cli("convert", tiny_llama, tmp_path / "out", "-g", "1"), "not a plain file name"
    )
    assert nothing_written(tmp_path)


def test_existing_output_is_refused_without_overwrite(tiny_llama, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert_one_line_error(run_cli("convert", tiny_llama, out, "-g", "1"), "--overwrite")
    assert (out / "keep.txt").read_text() == "mine"


def test_output_inside_source_is_refused(tiny_llama):
    r = run_cli("convert", tiny_llama, tiny_llama / "converted", "-g", "1")
    assert_one_line_error(r, "inside SRC")
    assert not (tiny_llama / "converted").exists()


def test_pickle_weights_refused_unless_allowed(tmp_path):
    import torch
    from tiny_models import tiny_config
    from transformers import AutoModelForCausalLM

    src = tmp_path / "src"
    model = AutoModelForCausalLM.from_config(tiny_config("llama", 8))
    model.save_pretrained(src)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    torch.save(state, src / "pytorch_model.bin")
    (src / "model.safetensors").unlink()
    r = run_cli("convert", src, tmp_path / "out", "-g", "1")
    assert_one_line_error(r, "pickled", "--allow-pickle")
    assert nothing_written(tmp_path)
    ok = run_cli("convert", src, tmp_path / "out", "-g", "1", "--allow-pickle")
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_nonexistent_source(tmp_path):
    assert_one_line_error(
        run_cli("convert", tmp_path / "nope", tmp_path / "out", "-g", "1"), "does not exist"
    )


def test_unreachable_hub_id(tmp_path):
    r = run_cli("convert", "someone/some-model", tmp_path / "out", "-g", "1", env={"HF_HUB_OFFLINE": "1"})
    assert_one_line_error(r, "someone/some-model")
    assert nothing_written(tmp_path)


def test_disk_full_mid_write_removes_temporary(tiny_llama, tmp_path, monkeypatch):
    import uptrain.checkpoint.writer as writer

    calls = {"n": 0}
    real = os.pwrite

    def failing_pwrite(fd, data, offset):
        calls["n"] += 1
        if calls["n"] > 10:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(writer.os, "pwrite", failing_pwrite)
    r = run_cli("convert", tiny_llama, tmp_path / "out", "-g", "1")
    assert_one_line_error(r, "no space left")
    assert calls["n"] > 10
    assert nothing_written(tmp_path)


def test_too_little_space_is_refused_before_writing(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 10))
    assert_one_line_error(run_cli("convert", tiny_llama, tmp_path / "out", "-g", "1"), "GB is free")
    assert nothing_written(tmp_path)


def test_bad_dtype_and_method(tiny_llama, tmp_path):
    assert_one_line_error(
        run_cli("convert", tiny_llama, tmp_path / "out", "-g", "1", "--dtype", "int8"), "bf16"
    )
    assert_one_line_error(
        run_cli("convert", tiny_llama, tmp_path / "out", "-g", "1", "--method", "median"), "mean"
    )
    assert nothing_written(tmp_path)


def test_missing_groups_is_a_one_line_usage_error(tiny_llama, tmp_path):
    assert_one_line_error(run_cli("convert", tiny_llama, tmp_path / "out"), "--groups is required", code=1)


def test_stale_temporary_from_a_killed_run_is_removed(tiny_llama, tmp_path):
    stale = tmp_path / ".out.uptrain-tmp-999999999-abcd1234"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    r = run_cli("convert", tiny_llama, tmp_path / "out", "-g", "1")
    assert r.exit_code == 0, r.output
    assert not stale.exists()
