"""`--target mla`'s mistakes: each a one-line error before anything is written."""

from __future__ import annotations

import pytest
from cli_helpers import assert_one_line_error, run_cli
from tiny_models import build_tiny


def nothing_written(tmp_path) -> bool:
    return not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def convert(src, tmp_path, *args):
    return run_cli("convert", src, tmp_path / "out", "--target", "mla", *args)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--qk-rope-dim", "4"], "needs --kv-lora-rank"),
        (["--kv-lora-rank", "8"], "needs --qk-rope-dim"),
        (["--kv-lora-rank", "8", "--qk-rope-dim", "3"], "an even number"),
        (["--kv-lora-rank", "8", "--qk-rope-dim", "4", "-g", "1"], "--groups applies to target gqa"),
        (["--kv-lora-rank", "8", "--qk-rope-dim", "4", "--method", "fit"], "--mla-factor"),
        (["--kv-lora-rank", "8", "--qk-rope-dim", "4", "--dtype", "fp16"], "fp16 cannot represent"),
        (["--kv-lora-rank", "8", "--qk-rope-dim", "10"], "at most the head's 8 dims"),
        (["--kv-lora-rank", "13", "--qk-rope-dim", "4"], "choose at most 12"),  # 1 KV head x (16 - 4)
    ],
)
def test_bad_settings(tmp_path, args, fragment):
    src = build_tiny("llama", tmp_path / "src", kv_heads=1)
    assert_one_line_error(convert(src, tmp_path, *args), fragment)
    assert nothing_written(tmp_path)


@pytest.mark.parametrize(
    "model_type, extra, fragment",
    [
        ("qwen2", {}, "qwen2 is not one of them"),
        ("olmo2", {}, "olmo2 is not one of them"),
        ("llama", {"attention_bias": True}, "projections have biases"),
        ("mistral", {"sliding_window": 64}, "sliding-window attention"),
    ],
)
def test_sources_it_cannot_hold_are_refused(tmp_path, model_type, extra, fragment):
    src = build_tiny(model_type, tmp_path / "src", kv_heads=2, **extra)
    r = convert(src, tmp_path, "--kv-lora-rank", "8", "--qk-rope-dim", "4", "--calibration-data", str(src))
    assert_one_line_error(r, fragment, "--target gqa")
    assert nothing_written(tmp_path)
