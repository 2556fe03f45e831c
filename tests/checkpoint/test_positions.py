"""max_positions: the one reading of a model's position limit, for training (config.json as a dict)
and evaluation (a transformers config or a loaded model), checked on hand-written configs."""

from types import SimpleNamespace

import pytest

from uptrain.checkpoint.positions import max_positions

# (config.json as written, the limit a person reads from it)
CASES = [
    ({"model_type": "llama", "max_position_embeddings": 4096}, 4096),
    ({"model_type": "gpt2", "n_positions": 1024}, 1024),
    ({"model_type": "gpt2", "n_positions": 1024, "n_ctx": 512}, 1024),  # n_positions is read first
    ({"n_ctx": 2048}, 2048),  # older GPT-style configs that state only n_ctx
    ({"max_sequence_length": 300}, 300),
    ({"seq_length": 8192}, 8192),
    ({"max_position_embeddings": 0, "seq_length": 77}, 77),  # a zero says nothing
    ({"max_position_embeddings": None, "n_ctx": 64}, 64),
    ({"text_config": {"max_position_embeddings": 32768}}, 32768),  # composite: the text part
    ({"max_position_embeddings": 128, "text_config": {"max_position_embeddings": 256}}, 128),
    ({"vocab_size": 32000}, None),
    ({}, None),
]


@pytest.mark.parametrize("config, expected", CASES)
def test_a_config_dict(config, expected):
    assert max_positions(config) == expected


@pytest.mark.parametrize(
    "config, expected", [(c, e) for c, e in CASES if c.get("model_type") in ("llama", "gpt2")]
)
def test_a_transformers_config_and_a_model_read_as_the_dict(config, expected):
    from transformers import AutoConfig

    fields = {k: v for k, v in config.items() if k != "model_type"}
    loaded = AutoConfig.for_model(config["model_type"], **fields)
    assert max_positions(loaded) == expected
    assert max_positions(SimpleNamespace(config=loaded)) == expected  # a model: read through .config
    assert max_positions(loaded.to_dict()) == expected


def test_a_composite_transformers_config_reads_its_text_part():
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    text = LlamaConfig(max_position_embeddings=777).to_dict()
    config = LlavaConfig(text_config=text, vision_config=CLIPVisionConfig().to_dict())
    assert max_positions(config) == 777
    assert max_positions(config.to_dict()) == 777
