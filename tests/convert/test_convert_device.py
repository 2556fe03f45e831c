"""`uptrain convert --device`: where the calibration pass and refine run, what uptrain.json records,
and a GPU this machine lacks refused before anything is written (torch.cuda patched: no GPU used)."""

import json

import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli
from method_helpers import save_char_tokenizer
from safetensors.torch import load_file
from tiny_models import build_tiny

from uptrain.checkpoint.source import open_source
from uptrain.config import ConvertSection
from uptrain.convert.calibrated import refine_precision
from uptrain.convert.convert import convert_checkpoint

TEXT = "Grouped-query attention shares keys and values between query heads.\n" * 30


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture
def tiny_with_text(tmp_path):
    src = build_tiny("llama", tmp_path / "src", kv_heads=4)
    save_char_tokenizer(src)
    text = tmp_path / "calibration.txt"
    text.write_text(TEXT)
    return src, text


def test_a_cpu_conversion_records_device_cpu_and_fp32(no_gpu, tiny_with_text, tmp_path):
    src, text = tiny_with_text
    out = tmp_path / "out"
    r = run_cli(
        "convert", src, out, "-g", "2", "--method", "fit",
        "--calibration-data", text, "--calibration-tokens", "300", "--calibration-seq-len", "100",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    calibration = json.loads((out / "uptrain.json").read_text())["conversion"]["calibration"]
    assert (calibration["device"], calibration["dtype"]) == ("cpu", "fp32")


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_a_gpu_this_machine_lacks_is_refused_before_anything_is_written(
    no_gpu, tiny_with_text, tmp_path, device
):
    src, _ = tiny_with_text
    out = tmp_path / "out"
    r = run_cli("convert", src, out, "-g", "2", "--device", device)
    assert_one_line_error(r, f"--device {device}: this machine has no CUDA GPU", "--device cpu")
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_refine_runs_in_bf16_on_a_gpu_by_default():
    assert refine_precision("auto", torch.device("cuda", 0)) == "bf16"
    assert refine_precision("fp32", torch.device("cuda", 0)) == "fp32"


@pytest.mark.parametrize("method, sequential", [("fit+refine", False), ("fit+refine", True)])
def test_a_bf16_calibration_pass_runs_and_stays_near_fp32(tiny_with_text, tmp_path, method, sequential):
    """What a GPU's default does (the source in bf16, its statistics and replayed inputs in float32 or
    wider), run on the CPU: the converted keys stay within 5% of the fp32 pass's. bf16 rounds each
    activation by up to 2^-9 (0.2%) relative, and a tiny random model's two layers compound that to
    about 0.3-0.6% here; 5% is ten times that and still far below what a broken pass (a mismatched
    mask, statistics of the wrong tensor) moves the keys by (order 1)."""
    src, text = tiny_with_text
    keys = {}
    for dtype in ("fp32", "bf16"):
        out = tmp_path / dtype
        settings = ConvertSection(
            groups=2, method=method, sequential=sequential, calibration_data=str(text),
            calibration_tokens=300, calibration_seq_len=100, refine_steps=3, refine_tokens=200,
            calibration_dtype=dtype, device="cpu",
        )  # fmt: skip
        convert_checkpoint(open_source(src), out, settings)
        assert json.loads((out / "uptrain.json").read_text())["conversion"]["calibration"]["dtype"] == dtype
        keys[dtype] = load_file(out / "model.safetensors")["model.layers.1.self_attn.k_proj.weight"].float()
    assert float((keys["bf16"] - keys["fp32"]).norm() / keys["fp32"].norm()) < 0.05
