"""checkpoint_dtype: the dtype final/ is written in, read from the uptrained checkpoint's config.json."""

import json

import pytest
import torch

from uptrain.train.final import checkpoint_dtype


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"dtype": "bfloat16"}, torch.bfloat16),
        ({"torch_dtype": "float16"}, torch.float16),  # older transformers wrote torch_dtype
        ({"dtype": "float32", "torch_dtype": "bfloat16"}, torch.float32),  # dtype wins
        ({}, torch.float32),
        ({"dtype": "int8"}, torch.float32),  # not a dtype weights are trained in
    ],
)
def test_the_declared_dtype(tmp_path, config, expected):
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert checkpoint_dtype(tmp_path) == expected


def test_no_readable_config_means_float32(tmp_path):
    assert checkpoint_dtype(tmp_path) == torch.float32
    (tmp_path / "config.json").write_text("{")
    assert checkpoint_dtype(tmp_path) == torch.float32
