"""Packing into blocks (no padding), the held-out split, and the seeded order."""

from __future__ import annotations

import datasets
import numpy as np
import pytest

from uptrain.checkpoint.offline import byte_level_tokenizer
from uptrain.config import DataSection, EvalSection
from uptrain.errors import UptrainError
from uptrain.train.corpus import check_data_source, epoch_order, load_corpus, training_loader
from uptrain.train.packing import pack_token_lists, tokenize_and_pack

DOCS = ["The quick brown fox.", "", "jumps over\nthe lazy dog", "   ", "ok é"]


def test_pack_token_lists_by_hand():
    assert pack_token_lists([[1, 2, 3], [4], [5, 6, 7, 8, 9]], 4) == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert pack_token_lists([[1, 2]], 4) == []


def test_tokenize_and_pack_concatenates_documents_with_eos_and_never_pads():
    tokenizer = byte_level_tokenizer()
    eos = tokenizer.eos_token_id
    # independent: each non-blank document's UTF-8 bytes as the byte-level vocabulary's ids, then EOS
    stream = []
    for doc in DOCS:
        if doc.strip():
            stream += [_byte_id(tokenizer, b) for b in doc.encode()] + [eos]
    packed = tokenize_and_pack(datasets.Dataset.from_dict({"text": DOCS}), tokenizer, seq_len=8)
    blocks = packed["input_ids"]
    assert all(len(b) == 8 for b in blocks)  # fixed length: nothing padded
    assert len(blocks) == len(stream) // 8
    assert [t for b in blocks for t in b] == stream[: len(blocks) * 8]
    assert tokenizer.pad_token_id not in {t for b in blocks for t in b}
    assert tokenizer.decode(stream).split(tokenizer.eos_token)[:3] == [d for d in DOCS if d.strip()]


def _byte_id(tokenizer, byte: int) -> int:
    """The byte-level tokenizer's id for one byte: GPT-2's byte-to-symbol table, looked up in the vocab."""
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    symbols = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + extra)
            extra += 1
    return tokenizer.get_vocab()[symbols[byte]]


def test_streaming_packs_the_same_blocks():
    tokenizer = byte_level_tokenizer()
    ds = datasets.Dataset.from_dict({"text": DOCS * 3, "other": list(range(15))})
    eager = tokenize_and_pack(ds, tokenizer, seq_len=8)["input_ids"]
    streamed = [row["input_ids"] for row in tokenize_and_pack(ds.to_iterable_dataset(), tokenizer, seq_len=8)]
    assert streamed == eager


def test_epoch_order_is_a_seeded_permutation_per_pass():
    order = epoch_order(block_count=5, samples=12, seed=3)
    assert len(order) == 12
    assert sorted(order[:5]) == list(range(5)) and sorted(order[5:10]) == list(range(5))
    assert set(order[10:]) <= set(range(5)) and len(set(order[10:])) == 2
    assert np.array_equal(order, epoch_order(5, 12, seed=3))
    assert not np.array_equal(order, epoch_order(5, 12, seed=4))
    assert not np.array_equal(order[:5], order[5:10])  # each pass is shuffled afresh


def test_corpus_holds_out_the_first_blocks_and_batches_follow_the_order(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("".join(f"line {i} of the corpus\n" for i in range(200)))
    tokenizer = byte_level_tokenizer()
    data = DataSection(dataset=str(text), seq_len=16)
    corpus = load_corpus(data, EvalSection(blocks=3), tokenizer, tmp_path / "data")
    everything = text.read_text().encode()  # one document: its bytes then EOS, cut in 16s
    assert corpus.heldout.shape == (3, 16)
    assert tokenizer.decode(corpus.heldout.flatten().tolist()) == everything[:48].decode()
    n = (len(everything) + 1) // 16 - 3
    assert corpus.block_count == n

    loader = training_loader(corpus, samples=10, batch_size=4, seed=0, buffer=100)
    batches = [b["input_ids"] for b in loader]
    assert [tuple(b.shape) for b in batches] == [(4, 16), (4, 16)]  # 10 samples, whole batches only
    order = epoch_order(n, 10, seed=0)
    for i, row in enumerate(batches[0]):
        assert row.tolist() == corpus.blocks[int(order[i])]["input_ids"]


def test_streamed_corpus_matches_the_eager_held_out_split(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("".join(f"line {i}\n" for i in range(300)))
    tokenizer = byte_level_tokenizer()
    eager = load_corpus(
        DataSection(dataset=str(text), seq_len=16), EvalSection(blocks=4), tokenizer, tmp_path
    )
    streamed = load_corpus(
        DataSection(dataset=str(text), seq_len=16, streaming=True), EvalSection(blocks=4), tokenizer, tmp_path
    )
    assert streamed.heldout.tolist() == eager.heldout.tolist()
    assert [r["input_ids"] for r in streamed.blocks] == eager.blocks["input_ids"]
    loader = training_loader(streamed, samples=6, batch_size=2, seed=0, buffer=4)
    assert sum(b["input_ids"].shape[0] for b in loader) == 6


def test_data_errors_name_the_key(tmp_path):
    with pytest.raises(UptrainError, match="data.dataset: .*missing.txt does not exist"):
        check_data_source(DataSection(dataset=str(tmp_path / "missing.txt")))
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("too short")
    with pytest.raises(UptrainError, match="fewer than eval.blocks 4"):
        load_corpus(
            DataSection(dataset=str(tiny), seq_len=8), EvalSection(blocks=4), byte_level_tokenizer(), tmp_path
        )
