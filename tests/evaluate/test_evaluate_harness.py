"""lm-eval-style word/byte perplexity: hand-computed cases and an independent rolling-window scorer."""

import copy
import math

import pytest
import torch
from tiny_models import build_tiny
from tiny_tokenizer import add_tokenizer

from uptrain.evaluate import harness_aggregate, harness_metrics


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    path = build_tiny("llama", tmp_path_factory.mktemp("harness") / "m", kv_heads=4, vocab_size=320)
    tokenizer = add_tokenizer(path)
    return AutoModelForCausalLM.from_pretrained(path).eval(), tokenizer


def test_aggregate_by_hand():
    r = harness_aggregate(loglikelihood=-10.0, words=5, n_bytes=20)
    assert r.word_perplexity == pytest.approx(math.exp(2.0))
    assert r.byte_perplexity == pytest.approx(math.exp(0.5))
    assert r.bits_per_byte == pytest.approx(0.5 / math.log(2))


def test_uniform_model_by_hand(tiny):
    model, tokenizer = copy.deepcopy(tiny[0]), tiny[1]
    with torch.no_grad():
        model.lm_head.weight.zero_()  # every next-token distribution is uniform over 320 ids
    text = "héllo  wörld\nfoo"  # words by re.split(r"\s+"): héllo, wörld, foo; UTF-8 bytes: 18
    n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    r = harness_metrics(model, tokenizer, text, window=4)
    assert (r.words, r.bytes, r.tokens) == (3, 18, n)
    assert r.loglikelihood == pytest.approx(-n * math.log(320), rel=1e-6)
    assert r.word_perplexity == pytest.approx(320 ** (n / 3), rel=1e-5)
    assert r.byte_perplexity == pytest.approx(320 ** (n / 18), rel=1e-5)
    assert r.bits_per_byte == pytest.approx(n * math.log2(320) / 18, rel=1e-6)


def harness_windows(tokens, prefix, max_len):
    """lm-eval's get_rolling_token_windows(context_len=1) followed by make_disjoint_window, rewritten."""
    if not tokens:
        return []
    pairs, first = [], min(max_len, len(tokens))
    pairs.append(([prefix] + tokens[: first - 1], tokens[:first]))
    predicted = first
    while predicted < len(tokens):
        n = min(len(tokens) - predicted, max_len)
        end = predicted + n
        pairs.append((tokens[end - max_len - 1 : end - 1], tokens[end - n : end]))
        predicted += n
    return [(inp[: len(inp) - len(pred) + 1], pred) for inp, pred in pairs]


@torch.no_grad()
def rolling_loglikelihood(model, tokens, prefix, max_len):
    """lm-eval's _loglikelihood_tokens, one window at a time: feed (context + continuation)[:-1]
    (at most max_len tokens), score the continuation with the last logits."""
    total = 0.0
    for context, continuation in harness_windows(tokens, prefix, max_len):
        whole = (context + continuation)[-(max_len + 1) :]
        logits = model(input_ids=torch.tensor([whole[:-1]])).logits[0].double()
        logp = torch.log_softmax(logits[-len(continuation) :], dim=-1)
        total += logp.gather(1, torch.tensor(continuation)[:, None]).sum().item()
    return total


@pytest.mark.parametrize("window,batch", [(8, 3), (16, 1), (128, 4)])
def test_matches_independent_rolling_loglikelihood(tiny, window, batch):
    model, tokenizer = tiny
    documents = [
        "The quick brown fox jumps over the lazy dog. " * 3,
        "Grouped-query attention shares heads.",
        "é",
        "Numbers like 2048 and 3.14 appear in text too, " * 2,
    ]
    expected = sum(
        rolling_loglikelihood(model, tokenizer(d, add_special_tokens=False)["input_ids"], 1, window)
        for d in documents
    )
    r = harness_metrics(model, tokenizer, documents, window=window, batch_size=batch)
    assert r.loglikelihood == pytest.approx(expected, rel=1e-5)
    assert r.words == sum(len(d.split()) + d.endswith(" ") for d in documents)  # a trailing space: ''
    assert r.bytes == sum(len(d.encode()) for d in documents)
    assert r.documents == 4
    assert r.tokens == sum(len(tokenizer(d, add_special_tokens=False)["input_ids"]) for d in documents)
