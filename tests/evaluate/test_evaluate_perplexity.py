"""Sliding-window perplexity against an independent, one-window-at-a-time version of the guide's loop."""

import math

import pytest
import torch
from tiny_models import build_tiny
from tiny_tokenizer import add_tokenizer

from uptrain.errors import UptrainError
from uptrain.evaluate import (
    perplexity,
    perplexity_of_blocks,
    perplexity_of_ids,
    rolling_windows,
    sliding_windows,
    tokenize_text,
)


@pytest.fixture(scope="module")
def model_and_tokenizer(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    path = build_tiny("llama", tmp_path_factory.mktemp("ppl") / "m", kv_heads=2, vocab_size=320)
    tokenizer = add_tokenizer(path)
    return AutoModelForCausalLM.from_pretrained(path).eval(), tokenizer


@pytest.fixture(scope="module")
def model(model_and_tokenizer):
    return model_and_tokenizer[0]


def random_ids(n, vocab=320, seed=1):
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def guide_loop(model, ids, window, stride, corrected=True):
    """The Hugging Face guide's loop, one window at a time, with transformers computing the loss.
    corrected=True weights each window by the labels actually scored; False is the printed recipe."""
    seq_len = ids.numel()
    nll_sum, n_tokens, prev_end = 0.0, 0, 0
    for begin in range(0, seq_len, stride):
        end = min(begin + window, seq_len)
        trg_len = end - prev_end
        input_ids = ids[begin:end].unsqueeze(0)
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        if int((target_ids[:, 1:] != -100).sum()) == 0:  # a 1-token last window: nothing to score
            break
        loss = model(input_ids=input_ids, labels=target_ids).loss.item()
        if corrected:
            count = int((target_ids[:, 1:] != -100).sum())  # transformers drops the first label
        else:
            count = int((target_ids != -100).sum()) - target_ids.size(0)
        nll_sum += loss * count
        n_tokens += count
        prev_end = end
        if end == seq_len:
            break
    return math.exp(nll_sum / n_tokens), n_tokens


@pytest.mark.parametrize(
    "n,window,stride,batch",
    [(100, 32, 16, 3), (100, 32, 8, 4), (97, 32, 32, 2), (40, 64, 32, 4), (128, 128, 64, 1), (77, 20, 7, 5)],
)
def test_equals_one_window_at_a_time_loop(model, n, window, stride, batch):
    ids = random_ids(n)
    expected, count = guide_loop(model, ids, window, stride)
    result = perplexity_of_ids(model, ids, window, stride, batch_size=batch)
    assert result.perplexity == pytest.approx(expected, rel=1e-5)
    assert result.tokens_scored == count
    assert result.nll == pytest.approx(math.log(expected), rel=1e-5)


def test_printed_recipe_differs_only_by_the_window_weighting(model):
    ids = random_ids(100)
    literal, literal_count = guide_loop(model, ids, 32, 16, corrected=False)
    result = perplexity_of_ids(model, ids, 32, 16)
    assert result.tokens_scored == 99  # every token but the first, once
    assert literal_count == 99 - (result.windows - 1)  # one short per window that has context
    assert result.perplexity == pytest.approx(literal, rel=2e-2)


def test_stride_equal_to_window_scores_disjoint_blocks(model):
    ids = random_ids(100)
    result = perplexity_of_ids(model, ids, 32, 32, batch_size=2)
    total, count = 0.0, 0
    with torch.no_grad():
        for begin in range(0, 100, 32):
            block = ids[begin : begin + 32].unsqueeze(0)
            logp = torch.log_softmax(model(input_ids=block).logits[0, :-1].double(), dim=-1)
            total -= logp.gather(1, block[0, 1:].unsqueeze(1)).sum().item()
            count += block.shape[1] - 1
    assert result.windows == 4
    assert result.tokens_scored == count == 100 - 4
    assert result.perplexity == pytest.approx(math.exp(total / count), rel=1e-5)


def test_blocks_are_independent_windows(model):
    blocks = random_ids(3 * 24).view(3, 24)
    result = perplexity_of_blocks(model, blocks, batch_size=2)
    with torch.no_grad():
        losses = [model(input_ids=b[None], labels=b[None]).loss.item() for b in blocks]
    assert result.tokens_scored == 3 * 23
    assert result.perplexity == pytest.approx(math.exp(sum(losses) / 3), rel=1e-5)


def test_sliding_windows_score_each_token_once():
    for n, window, stride in [(100, 32, 16), (100, 32, 32), (33, 32, 1), (5, 32, 16), (1000, 100, 37)]:
        windows = sliding_windows(n, window, stride)
        scored = [t for w in windows for t in range(w.target_begin, w.target_end)]
        starts = {w.begin for w in windows} if stride == window else {0}
        assert sorted(scored) == [t for t in range(n) if t not in starts]
        assert all(w.length <= window and w.target_end <= w.end for w in windows)
        assert windows[-1].end == n
    disjoint = sliding_windows(100, 25, 25)
    assert [(w.begin, w.end) for w in disjoint] == [(0, 25), (25, 50), (50, 75), (75, 100)]


def test_rolling_windows_score_each_token_once_with_one_context_token():
    for n, window in [(20, 8), (16, 8), (3, 8), (1, 8)]:
        windows = rolling_windows(n, window, offset=5)
        scored = [t for w in windows for t in range(w.target_begin, w.target_end)]
        assert scored == list(range(6, 6 + n))  # the prefix at offset 5 is never a target
        assert all(w.length <= window and w.target_end == w.end + 1 for w in windows)
    assert rolling_windows(0, 8) == []


def test_text_api_tokenizes_the_joined_documents(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    docs = ["The quick brown fox jumps over the lazy dog.", "Perplexity is exponentiated."] * 3
    ids = torch.tensor(tokenizer("\n\n".join(docs))["input_ids"])
    expected = perplexity_of_ids(model, ids, 32, 16)
    assert perplexity(model, tokenizer, docs, 32, 16).perplexity == expected.perplexity
    assert perplexity(model, tokenizer, "\n\n".join(docs), 32, 16).perplexity == expected.perplexity


def test_max_tokens_keeps_a_prefix_and_the_text_it_covers(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    text = "Robert Boulter is an English film actor. " * 400
    full = tokenizer(text)["input_ids"]
    ids, covered = tokenize_text(tokenizer, text, max_tokens=50)
    assert ids.tolist() == full[:50]
    assert text.startswith(covered)
    assert tokenizer(covered)["input_ids"] == full[:50]


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"window": 256, "stride": 128}, "larger than the model's 128 positions"),
        ({"window": 32, "stride": 64}, "--stride 64 must be between 1 and --window 32"),
        ({"window": 1, "stride": 1}, "too small"),
    ],
)
def test_bad_windows(model, kwargs, fragment):
    with pytest.raises(UptrainError, match=fragment):
        perplexity_of_ids(model, random_ids(100), **kwargs)


def test_default_window_is_capped_by_positions(model):
    result = perplexity_of_ids(model, random_ids(300))
    assert (result.window, result.stride) == (128, 64)


def test_training_mode_is_restored_and_dropout_off(tmp_path):
    from transformers import AutoModelForCausalLM

    path = build_tiny("llama", tmp_path / "m", kv_heads=2, attention_dropout=0.5)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    ids = random_ids(60, vocab=96)
    in_eval = perplexity_of_ids(model, ids, 32, 16).perplexity
    model.train()
    assert perplexity_of_ids(model, ids, 32, 16).perplexity == in_eval
    assert model.training
