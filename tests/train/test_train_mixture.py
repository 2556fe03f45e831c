"""data.mix: blocks drawn from each source in proportion to its weight, reproducibly, tagged with their
source; a single data.dataset as before. Which source a block came from is told apart here by its text
(one source is all 'a', the other all 'b'), independently of the tags the code adds."""

from __future__ import annotations

import pytest

from uptrain.checkpoint.offline import byte_level_tokenizer
from uptrain.config import DataSection, EvalSection, MixSource
from uptrain.train.corpus import load_corpus, training_loader

SEQ = 16
SAMPLES = 1200


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    a, b = root / "a.txt", root / "b.txt"
    a.write_text("a" * 40_000)  # 2,500 blocks of 16 tokens each: every draw stays within the first pass
    b.write_text("b" * 40_000)
    return root, a, b


def _mix(a, b, weights, streaming=False) -> DataSection:
    mix = [MixSource(dataset=str(a), weight=weights[0]), MixSource(dataset=str(b), weight=weights[1])]
    return DataSection(dataset=None, mix=mix, seq_len=SEQ, streaming=streaming)


def _drawn(texts, weights, seed, streaming=False, samples=SAMPLES):
    root, a, b = texts
    tokenizer = byte_level_tokenizer()
    a_id, b_id = tokenizer.convert_tokens_to_ids(["a", "b"])
    corpus = load_corpus(
        _mix(a, b, weights, streaming), EvalSection(blocks=4), tokenizer, root / "data", seed
    )
    blocks, tags = [], []
    for batch in training_loader(corpus, samples, batch_size=8, seed=seed, buffer=64):
        blocks += batch["input_ids"].tolist()
        tags += batch["source"].tolist()
    # the test's own count: a block of 'a' ids came from a.txt, of 'b' ids from b.txt (EOS may end one)
    own = [0 if a_id in row else 1 for row in blocks]
    assert all(
        set(row) <= {a_id, tokenizer.eos_token_id} or set(row) <= {b_id, tokenizer.eos_token_id}
        for row in blocks
    )
    return blocks, own, tags


@pytest.mark.parametrize("streaming", [False, True])
def test_drawn_proportions_follow_the_weights(texts, streaming):
    blocks, own, tags = _drawn(texts, (0.7, 0.3), seed=0, streaming=streaming)
    assert len(blocks) == SAMPLES
    assert tags == own  # the tags the code counts agree with the text of each block
    share = own.count(0) / SAMPLES
    sd = (0.7 * 0.3 / SAMPLES) ** 0.5
    assert abs(share - 0.7) < 4 * sd, share  # a binomial draw: 4 standard deviations ~ 1 in 16,000


def test_a_zero_weight_source_gives_nothing(texts):
    _, own, tags = _drawn(texts, (1.0, 0.0), seed=0, samples=80)
    assert own == tags == [0] * 80


@pytest.mark.parametrize("streaming", [False, True])
def test_the_same_seed_draws_the_same_blocks(texts, streaming):
    first = _drawn(texts, (0.5, 0.5), seed=3, streaming=streaming, samples=200)[1]
    again = _drawn(texts, (0.5, 0.5), seed=3, streaming=streaming, samples=200)[1]
    other = _drawn(texts, (0.5, 0.5), seed=4, streaming=streaming, samples=200)[1]
    assert first == again
    assert first != other


def test_a_single_dataset_is_read_as_before(texts):
    root, a, _ = texts
    tokenizer = byte_level_tokenizer()
    corpus = load_corpus(
        DataSection(dataset=str(a), seq_len=SEQ), EvalSection(blocks=4), tokenizer, root / "d"
    )
    batch = next(iter(training_loader(corpus, 16, batch_size=8, seed=0, buffer=64)))
    assert set(batch) == {"input_ids"}  # no source tags without a mixture
    assert corpus.sources == [] and corpus.heldout.shape == (4, SEQ)
    # held out: the first 4 blocks of the one document, its bytes cut in 16s
    assert corpus.heldout.flatten().tolist() == tokenizer("a" * 64)["input_ids"]
