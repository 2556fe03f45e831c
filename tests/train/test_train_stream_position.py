"""A streamed order's position: the blocks are the stream's, permuted in seeded windows (checked against
the test's own permutation); a position taken mid-stream and loaded into a fresh order gives the same
blocks as an uninterrupted pass, for one source and for a mixture; and the resumed order tokenizes only
what comes after the position (plus the one map batch it restarts inside), never the text before."""

from __future__ import annotations

import json

import numpy as np
import pytest

from uptrain.checkpoint.offline import byte_level_tokenizer
from uptrain.config import DataSection, EvalSection, MixSource
from uptrain.train import packing
from uptrain.train.corpus import load_corpus
from uptrain.train.streamed import StreamedBlocks

SEQ, BUFFER = 16, 24


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    a, b = root / "a.jsonl", root / "b.jsonl"  # a document a row (a .txt file is one document)
    a.write_text(
        "".join(json.dumps({"text": f"document {i} of the first source."}) + "\n" for i in range(3000))
    )
    b.write_text("".join(json.dumps({"text": f"second {i} zeta eta"}) + "\n" for i in range(3000)))
    return root, a, b


def _corpus(texts, mixed: bool):
    root, a, b = texts
    if mixed:
        mix = [MixSource(dataset=str(a), weight=0.6), MixSource(dataset=str(b), weight=0.4)]
        data = DataSection(dataset=None, mix=mix, seq_len=SEQ, streaming=True)
    else:
        data = DataSection(dataset=str(a), seq_len=SEQ, streaming=True)
    return load_corpus(data, EvalSection(blocks=4), byte_level_tokenizer(), root / "data", seed=5)


def _rows(order, n=None) -> list[list[int]]:
    rows = []
    for row in order:
        rows.append(row["input_ids"].tolist())
        if len(rows) == n:
            break
    return rows


def test_the_order_is_the_stream_permuted_in_seeded_windows(texts):
    corpus = _corpus(texts, mixed=False)
    stream = [row["input_ids"] for row in corpus.blocks]
    samples = len(stream) + 30  # into the second pass
    repeated = (stream * 2)[:samples]
    expected = []
    for start in range(0, samples, BUFFER):
        window = repeated[start : start + BUFFER]
        expected += [window[i] for i in np.random.default_rng([7, start // BUFFER]).permutation(len(window))]
    assert _rows(StreamedBlocks(corpus.blocks, samples, seed=7, buffer=BUFFER)) == expected


@pytest.mark.parametrize("mixed", [False, True], ids=["one source", "mixture"])
@pytest.mark.parametrize("taken", [1, BUFFER, BUFFER + 5, 333])
def test_a_position_resumes_the_same_blocks(texts, mixed, taken):
    corpus = _corpus(texts, mixed)
    samples = 400
    uninterrupted = _rows(StreamedBlocks(corpus.blocks, samples, seed=3, buffer=BUFFER))
    first = StreamedBlocks(corpus.blocks, samples, seed=3, buffer=BUFFER)
    before = _rows(first, taken + 2 * BUFFER)[:taken]  # the loader may have read ahead of training
    resumed = StreamedBlocks(corpus.blocks, samples, seed=3, buffer=BUFFER)
    resumed.resume = first.position(taken)
    assert before + _rows(resumed) == uninterrupted


def test_a_resumed_order_does_not_tokenize_the_text_before_its_position(texts, monkeypatch):
    tokenized = [0]
    original = packing._TokenizeAndPack.__call__

    def counting(self, batch):
        tokenized[0] += len(batch[self.text_column])
        return original(self, batch)

    monkeypatch.setattr(packing._TokenizeAndPack, "__call__", counting)
    monkeypatch.setattr(packing, "MAP_BATCH_ROWS", 50)  # documents tokenized at a time
    corpus = _corpus(texts, mixed=False)
    samples, taken = 900, 700  # documents of ~35 tokens: 700 blocks of 16 hold about 320 of them
    tokenized[0] = 0
    _rows(StreamedBlocks(corpus.blocks, samples, seed=0, buffer=BUFFER))
    whole = tokenized[0]

    first = StreamedBlocks(corpus.blocks, samples, seed=0, buffer=BUFFER)
    tokenized[0] = 0
    _rows(first, taken)
    before = tokenized[0]
    resumed = StreamedBlocks(corpus.blocks, samples, seed=0, buffer=BUFFER)
    resumed.resume = first.position(taken)
    tokenized[0] = 0
    _rows(resumed)
    after = tokenized[0]
    assert before > 5 * 50  # deep into the stream
    # what is left, plus at most the one map batch the position falls inside (datasets restarts it)
    assert after <= whole - before + 50, (whole, before, after)
