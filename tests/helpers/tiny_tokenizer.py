"""A small byte-level BPE tokenizer trained in the test run (no downloads), for evaluation tests."""

from __future__ import annotations

from pathlib import Path

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Grouped-query attention shares each key and value head among several query heads.",
    "Perplexity is the exponentiated average negative log-likelihood of a sequence.",
    "Robert Boulter is an English film, television and theatre actor.",
    "Les élèves étudient à l'école; die Bücher sind schön.",
    "Numbers like 2048 and 3.14 appear in text too.",
]


def build_tokenizer(vocab_size: int = 320, sentences: list[str] | None = None):
    """A PreTrainedTokenizerFast with <s> (BOS), </s> (EOS) and <pad>, that adds no special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(sentences or SENTENCES, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def add_tokenizer(model_dir: Path, vocab_size: int = 320, sentences: list[str] | None = None):
    tokenizer = build_tokenizer(vocab_size, sentences)
    tokenizer.save_pretrained(model_dir)
    return tokenizer
