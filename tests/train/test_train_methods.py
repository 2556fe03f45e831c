"""A calibrated conversion method (issue 8) chosen in the train/run config: model.convert.method and
its calibration keys reach the converter, are recorded, and are checked before any work."""

from __future__ import annotations

import json

import torch
from cli_helpers import assert_one_line_error
from safetensors.torch import load_file
from train_runs import reset_accelerate, train_in_process


def _k_proj(directory, layer=0):
    tensors = {}
    for shard in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(shard))
    return tensors[f"model.layers.{layer}.self_attn.k_proj.weight"]


def test_fit_from_the_config_converts_with_its_calibration(tmp_path):

    reset_accelerate()
    text = tmp_path / "calibration.txt"
    text.write_text(" ".join(f"word{i % 97} and more text {i}" for i in range(3000)))
    out = tmp_path / "out"
    result = train_in_process(
        out,
        "model.convert.method=fit",
        f"model.convert.calibration_data={text}",
        "model.convert.calibration_tokens=512",
        "model.convert.calibration_seq_len=64",
        "budget.max_steps=1",
        "budget.max_tokens=null",
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "converted" / "uptrain.json").read_text())
    assert record["conversion"]["method"] == "fit"
    assert record["conversion"]["convert_settings"]["calibration"]["calibration_tokens"] == 512
    # not the mean of each group's heads (what method mean would have written)
    source, converted = _k_proj(out / "source"), _k_proj(out / "converted")
    heads, dim = 8, source.shape[0] // 8
    mean = source.view(2, heads // 2, dim, -1).mean(dim=1).reshape(2 * dim, -1)
    assert converted.shape == mean.shape
    assert not torch.allclose(converted, mean, atol=1e-4)


def test_a_bad_method_or_calibration_is_refused_before_anything_is_written(tmp_path):
    reset_accelerate()
    out = tmp_path / "out"
    result = train_in_process(out, "model.convert.method=fit+bogus")
    assert_one_line_error(result, "model.convert.method", "similar+fit+refine")
    result = train_in_process(out, "model.convert.method=fit", "model.convert.calibration_data=/no/such.txt")
    assert_one_line_error(result, "model.convert.calibration_data", "fix the path")
    assert not out.exists()
