"""The calibration pass, layer by layer from the shards: its statistics against the test's own
computation from transformers' hidden states and attention probabilities."""

import pytest
import torch
from method_helpers import save_char_tokenizer
from tiny_models import build_tiny
from transformers import AutoModelForCausalLM

import uptrain.convert.calibration as calibration
import uptrain.convert.calibration.stats as calibration_stats
from uptrain.architectures import get_architecture, read_dims
from uptrain.checkpoint.source import open_source
from uptrain.config import ConvertSection
from uptrain.convert.calibration.layerwise import walk_layers
from uptrain.convert.calibration.skeleton import Skeleton
from uptrain.data import TextSource
from uptrain.errors import UptrainError


class Collect:
    """A sink that keeps every layer's calibration."""

    def __init__(self):
        self.layers = {}

    def resume(self):
        return None

    def finish(self, layer, cal, carry):
        self.layers[layer] = cal


def augmented_moment(x: torch.Tensor) -> torch.Tensor:
    x = torch.cat([x.double(), torch.ones(x.shape[0], 1, dtype=torch.float64)], 1)
    return x.T @ x / x.shape[0]


@pytest.mark.parametrize("model_type", ["phi", "llama"])
def test_statistics_match_hidden_states(tmp_path, monkeypatch, model_type):
    """phi: LayerNorm input norm, partial rotary (half the head), biases."""
    monkeypatch.setattr(calibration_stats, "MIXED_STRIDE", 1)
    monkeypatch.setattr(calibration_stats, "BATCH_TOKENS", 32)  # two sequences per forward
    src = build_tiny(model_type, tmp_path / "src", kv_heads=4)
    source = open_source(src)
    arch = get_architecture(model_type)
    dims = read_dims(arch, source.config)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, attn_implementation="eager").eval()
    ids = torch.randint(3, 96, (4, 16), generator=torch.Generator().manual_seed(0))
    sink = Collect()
    walk_layers(Skeleton(source, arch, dims, "fp32"), ids, 2, sink, torch.device("cpu"))
    stats = sink.layers

    with torch.no_grad():
        out = model(ids, output_hidden_states=True, output_attentions=True)
    for i, layer in enumerate(model.model.layers):
        with torch.no_grad():
            x = layer.input_layernorm(out.hidden_states[i])  # (4, 16, hidden)
        s = stats[i]
        assert s.tokens == 64
        torch.testing.assert_close(
            s.second_moment, augmented_moment(x.reshape(-1, x.shape[-1])), rtol=1e-5, atol=1e-5
        )
        mixed = out.attentions[i] @ x.unsqueeze(1)  # (4, heads, 16, hidden): each query's mix
        torch.testing.assert_close(
            s.mixed_moment, augmented_moment(mixed.reshape(-1, x.shape[-1])), rtol=1e-5, atol=1e-5
        )
        assert s.rotary_dim == (4 if model_type == "phi" else 8)
        assert len(s.replay) == 1 and torch.equal(s.replay[0].hidden_states, x[:2])
        assert s.rope == "half" and not s.keys_normalized


def test_calibration_text_is_cut_into_sequences(tmp_path):
    src = build_tiny("llama", tmp_path / "src", kv_heads=4)
    save_char_tokenizer(src)
    text = tmp_path / "t.txt"
    text.write_text("abcdefghij" * 30)
    spec = calibration.CalibrationSpec(TextSource(str(text)), 100, 30, keep_tokens=40)
    sink = Collect()
    assert calibration.collect_calibration(open_source(src), spec, sink) == 90
    stats = sink.layers
    assert stats[0].tokens == 90  # three whole sequences of 30
    assert sum(b.hidden_states.shape[0] for b in stats[0].replay) == 2  # 40 tokens: two sequences
    assert stats[1].modules is not None and stats[1].modules.fixed == {}


def test_token_ids_are_the_first_tokens_without_special_tokens(tmp_path):
    save_char_tokenizer(tmp_path)
    from transformers import AutoTokenizer

    text = tmp_path / "t.txt"
    text.write_text("hello world")
    ids = calibration.calibration_token_ids(AutoTokenizer.from_pretrained(tmp_path), TextSource(str(text)), 5)
    assert ids.tolist() == [ord(c) - 31 for c in "hello"]


def test_bad_calibration_options():
    with pytest.raises(UptrainError, match="calibration_tokens"):
        calibration.calibration_spec(ConvertSection(groups=1, calibration_tokens=0), torch.device("cpu"))
    spec = calibration.calibration_spec(ConvertSection(groups=1), torch.device("cpu"))
    assert spec.data.dataset == "Salesforce/wikitext" and spec.data.split == "train"
