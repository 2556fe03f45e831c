"""`uptrain convert --method ...` with calibration text, as a user runs it, and its one-line errors."""

import json
import re

import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli
from method_helpers import save_char_tokenizer
from safetensors.torch import load_file
from tiny_models import build_tiny
from transformers import AutoModelForCausalLM

TEXT = "The quick brown fox jumps over the lazy dog. Grouped-query attention shares keys and values.\n" * 40


@pytest.fixture
def tiny_with_text(tmp_path):
    src = build_tiny("llama", tmp_path / "src", kv_heads=4)
    save_char_tokenizer(src)
    text = tmp_path / "calibration.txt"
    text.write_text(TEXT)
    return src, text


def test_pipeline_records_steps_calibration_and_figures(tiny_with_text, tmp_path):
    src, text = tiny_with_text
    out = tmp_path / "out"
    r = run_cli(
        "convert", src, out, "-g", "2", "--method", "refine+similar",  # written in any order
        "--calibration-data", text, "--calibration-tokens", "600", "--calibration-seq-len", "100",
        "--refine-steps", "3", "--refine-tokens", "200", "--refine-precision", "fp32",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "(similar+fit+refine)" in r.output and "calibrated on 600 tokens" in r.output
    c = json.loads((out / "uptrain.json").read_text())["conversion"]
    assert c["method"] == "similar+fit+refine" and c["method_steps"] == ["similar", "fit", "refine"]
    assert c["calibration"]["data"] == str(text) and c["calibration"]["tokens"] == 600
    assert c["calibration"]["seq_len"] == 100 and c["calibration"]["sequential"] is False
    assert c["method_options"] == {
        "refine_steps": 3,
        "refine_lr": 3e-3,
        "refine_tokens": 200,
        "refine_batch_tokens": 512,
        "refine_precision": "fp32",
        "refine_output": False,
        "query_aware": True,
        "output_aware": True,
        "mixed_values": True,
    }
    figures = c["layer_figures"]
    assert set(figures) == {"score_error", "value_error", "refine_error_before", "refine_error_after"}
    assert len(figures["score_error"]["layers"]) == 2
    assert all(
        a <= b
        for a, b in zip(
            figures["refine_error_after"]["layers"], figures["refine_error_before"]["layers"], strict=True
        )
    )


def test_mean_records_no_calibration(tiny_with_text, tmp_path):
    src, _ = tiny_with_text
    r = run_cli("convert", src, tmp_path / "out", "-g", "2")
    assert r.exit_code == 0, r.output
    c = json.loads((tmp_path / "out" / "uptrain.json").read_text())["conversion"]
    assert c["method"] == "mean" and "calibration" not in c


@pytest.mark.parametrize(
    "method,fragment",
    [
        ("median", "[similar+](mean|first|random|aligned|fit)[+refine]"),
        ("mean+fit", "choose one merge step"),
        ("similar+random", "drop one of them"),
        ("fit+fit", "is not valid"),
    ],
)
def test_bad_method_is_one_line(tiny_with_text, tmp_path, method, fragment):
    src, text = tiny_with_text
    r = run_cli("convert", src, tmp_path / "out", "-g", "2", "--method", method)
    assert_one_line_error(r, fragment)
    assert not (tmp_path / "out").exists()


def test_missing_calibration_file_names_the_flag(tiny_with_text, tmp_path):
    src, _ = tiny_with_text
    r = run_cli(
        "convert", src, tmp_path / "out", "-g", "2", "--method", "fit", "--calibration-data", "nope.txt"
    )
    assert_one_line_error(r, "nope.txt", "--calibration-data")
    assert not (tmp_path / "out").exists()


def test_keys_normalized_after_projection_are_refused(tmp_path):
    src = build_tiny("qwen3", tmp_path / "src", kv_heads=4)
    save_char_tokenizer(src)
    text = tmp_path / "c.txt"
    text.write_text(TEXT)
    r = run_cli("convert", src, tmp_path / "out", "-g", "2", "--method", "fit", "--calibration-data", text)
    assert_one_line_error(r, "qk_norm", "mean+refine")
    r = run_cli(
        "convert", src, tmp_path / "out", "-g", "2", "--method", "mean+refine", "--calibration-data", text,
        "--calibration-tokens", "300", "--refine-steps", "2",
    )  # fmt: skip
    assert r.exit_code == 0, r.output


def _convert(src, text, out, groups, method, *flags):
    r = run_cli(
        "convert", src, out, "-g", str(groups), "--method", method, "--calibration-data", text,
        "--calibration-tokens", "600", "--calibration-seq-len", "100", "--refine-steps", "3",
        "--refine-tokens", "200", *flags,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return load_file(out / "model.safetensors")


@pytest.mark.parametrize("method", ["fit", "aligned+refine"])
def test_sequential_calibration_is_exact_at_the_source_kv_count(tiny_with_text, tmp_path, method):
    """With every layer exact, the converted stream equals the source's, so sequential calibration
    must leave the model unchanged (its transfer map is the identity)."""
    src, text = tiny_with_text
    out = tmp_path / "out"
    _convert(src, text, out, 4, method, "--sequential")
    ids = torch.randint(3, 60, (2, 20), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()(ids).logits
        got = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()(ids).logits
    assert float((got - ref).norm() / ref.norm()) < 1e-4


def test_sequential_changes_only_the_layers_above_the_first(tiny_with_text, tmp_path):
    """Layer 0 sees the same inputs either way; layer 1 sees the converted layer 0's outputs."""
    src, text = tiny_with_text
    seq = _convert(src, text, tmp_path / "seq", 2, "fit", "--sequential")
    plain = _convert(src, text, tmp_path / "plain", 2, "fit", "--no-sequential")
    for role in ("q", "k", "v", "o"):
        name = f"model.layers.{{}}.self_attn.{role}_proj.weight"
        assert torch.allclose(seq[name.format(0)], plain[name.format(0)], atol=1e-5), role
    assert not torch.allclose(seq[name.format(1)], plain[name.format(1)], atol=1e-4)
    record = json.loads((tmp_path / "seq" / "uptrain.json").read_text())["conversion"]
    assert record["calibration"]["sequential"] is True


@pytest.mark.parametrize("method", ["fit", "similar+refine"])
def test_calibration_from_the_untranslated_class_is_refused(tmp_path, method):
    """gpt2 becomes gpt_bigcode: uptrain calibrates on the translation (tests/convert/
    test_calibrated_variants.py); calibration a caller collected from GPT-2's own modules cannot
    rebuild gpt_bigcode attention, so convert_checkpoint refuses it in one line and writes nothing."""
    from fused_models import build_source

    from uptrain.checkpoint.source import open_source
    from uptrain.config import ConvertSection
    from uptrain.convert.convert import convert_checkpoint
    from uptrain.errors import UptrainError

    src = build_source("gpt2", tmp_path / "gpt2")
    out = tmp_path / "out"
    with pytest.raises(UptrainError, match=re.escape(f"{method} with calibration collected from gpt2")):
        convert_checkpoint(
            open_source(src), out, ConvertSection(groups=1, method=method), calibration={0: None, 1: None}
        )
    assert not out.exists()
