"""scripts/build_reference_model.py at a miniature size, and pre-training from scratch (model.tiny alone)."""

from __future__ import annotations

import json

import pytest
import torch
from reference_helpers import MINI_TOKENS_PER_STEP, build_mini_reference, fake_wikitext, load_script

from uptrain.checkpoint.provenance import pretraining_tokens
from uptrain.config import parse_config
from uptrain.errors import UptrainError


def test_wikitext_articles_split_at_top_level_titles_only(tmp_path):
    builder = load_script("build_reference_model")
    text = " \n = First = \n \n = = Part = = \n one two \n \n = Second = \n three \n"
    (tmp_path / "w.txt").write_text(text)
    articles = builder.wikitext_articles(tmp_path / "w.txt")
    assert articles == [" = First = \n \n = = Part = = \n one two \n ", " = Second = \n three "]


@pytest.mark.parametrize(
    "model, budget, fragment",
    [
        ({"tiny": {}}, {}, "set budget.max_tokens or budget.max_steps"),
        ({"tiny": {}, "path": "m"}, {"max_tokens": 100}, "model.tiny builds a source"),
        ({}, {"max_tokens": 100}, "or model.tiny alone, to pre-train from scratch"),
    ],
)
def test_pretraining_config_errors(model, budget, fragment):
    with pytest.raises(UptrainError) as err:
        parse_config({"model": model, "budget": budget})
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_tiny_alone_is_a_valid_pretraining_config():
    cfg = parse_config({"model": {"tiny": {"layers": 1}}, "budget": {"max_tokens": "1K"}})
    assert cfg.model.convert is None and cfg.model.tiny.layers == 1 and cfg.budget.max_tokens == 1000


@pytest.mark.slow
def test_builder_records_exact_pretraining_tokens_and_loads(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    steps = 6
    final = build_mini_reference(
        tmp_path / "ref", fake_wikitext(tmp_path / "wiki.txt"), steps, extra_tokens=MINI_TOKENS_PER_STEP - 1
    )
    assert final == (tmp_path / "ref" / "pretrain" / "final").absolute()

    record = json.loads((final / "uptrain.json").read_text())
    expected = steps * 2 * 32  # steps x global batch (2 blocks) x seq_len (32)
    assert record["pretraining_tokens"] == expected
    assert pretraining_tokens(record) == expected
    assert record["training"]["steps"] == steps and record["training"]["from_scratch"] is True
    reference = record["reference"]
    assert reference["corpus"]["sources"]["wikitext-2-valid"]["documents"] == 6
    assert set(reference["versions"]) >= {"python", "torch", "transformers", "tokenizers", "uptrain"}

    model = AutoModelForCausalLM.from_pretrained(final)
    assert model.config.num_key_value_heads == model.config.num_attention_heads == 8
    assert model.config.num_hidden_layers == 1 and model.config.hidden_size == 32
    tokenizer = AutoTokenizer.from_pretrained(final)
    assert len(tokenizer) == model.config.vocab_size == 320
    ids = tokenizer("the article was in the section", return_tensors="pt")["input_ids"]
    assert ids.shape[1] < len("the article was in the section")  # BPE merges were learned
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()
    # trained, not the random initialisation it started from
    source = AutoModelForCausalLM.from_pretrained(final.parent / "source")
    name = "model.layers.0.self_attn.k_proj.weight"
    assert not torch.equal(model.state_dict()[name], source.state_dict()[name])

    # the corpus holds every WikiText article and pydoc topic, in a seeded order, as JSON lines
    rows = [json.loads(line) for line in (tmp_path / "ref" / "corpus.jsonl").read_text().splitlines()]
    assert sum(r["source"] == "wikitext-2-valid" for r in rows) == 6
    assert any(r["source"] == "pydoc-topics" for r in rows)

    # a second build finds everything done and leaves the model as it is
    before = (final / "model.safetensors").stat().st_mtime_ns
    assert build_mini_reference(tmp_path / "ref", tmp_path / "wiki.txt", steps, MINI_TOKENS_PER_STEP - 1)
    assert (final / "model.safetensors").stat().st_mtime_ns == before
