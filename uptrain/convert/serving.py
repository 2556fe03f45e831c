"""What a serving engine reads from a checkpoint directory, checked against its weights (`convert
--verify`): config.json's `architectures` (the class vLLM, SGLang and llama.cpp's converter pick their
code by), its dtype, KV heads and head_dim (sizes of the attention tensors), tie_word_embeddings
(whether lm_head is stored), and the tokenizer and generation config beside it.

Errors are what makes an engine refuse the checkpoint or compute something else; warnings are files
that the output lacks because its source did (a tokenizer), which no conversion can supply."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from uptrain.architectures import get_architecture, get_layout, read_dims
from uptrain.architectures.route import source_variant
from uptrain.checkpoint.dtypes import dtype_name, main_dtype
from uptrain.checkpoint.loading import load_tokenizer
from uptrain.checkpoint.serving_keys import causal_lm_architectures, known_architectures
from uptrain.checkpoint.shards import SourceCheckpoint, find_weight_shards
from uptrain.checkpoint.source import read_config
from uptrain.errors import UptrainError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")


@dataclass
class ServingCheck:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check_serving(directory: Path) -> ServingCheck:
    """Every key and file a serving engine reads from `directory`, against its safetensors weights."""
    directory = Path(directory)
    config = read_config(directory)
    weights = SourceCheckpoint(config, find_weight_shards(directory), directory)
    check = ServingCheck()
    check.errors += _architectures(config)
    check.errors += _dtype(config, weights)
    check.errors += _attention(config, weights)
    errors, rows = _embeddings(directory, weights)
    check.errors += errors
    _tokenizer(directory, rows, check)
    _generation_config(directory, rows, check)
    return check


def _architectures(config: dict) -> list[str]:
    if known_architectures(config):
        return []
    try:
        expected = causal_lm_architectures(config.get("model_type"))
    except UptrainError as exc:
        return [str(exc)]
    said = config.get("architectures")
    what = "has no `architectures`" if not said else f"says architectures {json.dumps(said)}"
    return [
        f"config.json {what}, but transformers loads model_type {config.get('model_type')!r} with "
        f"{json.dumps(expected)}, the class serving engines choose their code by; set it to that"
    ]


def _dtype(config: dict, weights: SourceCheckpoint) -> list[str]:
    declared = {key: config[key] for key in ("dtype", "torch_dtype") if config.get(key) is not None}
    stored = main_dtype((weights.meta(n).dtype, weights.meta(n).shape) for n in weights.names())
    actual = dtype_name(stored) if stored is not None else None
    if not declared:
        return [f"config.json names no dtype (`dtype` or `torch_dtype`); the weights are {actual}"]
    if len(set(declared.values())) > 1:
        return [
            f"config.json's dtype and torch_dtype disagree ({declared['dtype']}, {declared['torch_dtype']})"
        ]
    (value,) = set(declared.values())
    if actual is not None and value != actual:
        return [f"config.json says dtype {value}, but the weights are {actual}"]
    return []


def _attention(config: dict, weights: SourceCheckpoint) -> list[str]:
    """The KV-head and head_dim keys are there, and every layer's attention tensors have the shapes
    they imply (read in the family's own layout, on the meta device)."""
    try:
        arch = get_architecture(config.get("model_type"))
        variant = source_variant(arch, config)
    except UptrainError as exc:
        return [str(exc)]
    keys = arch.config
    missing = [key for key in (keys.head_dim,) if key and key not in config]
    if variant.holds == "any" and keys.kv_heads and keys.kv_heads not in config:
        missing.insert(0, keys.kv_heads)
    if missing:
        return [f"config.json has no {' or '.join(missing)}; serving engines size the attention with it"]
    available = set(weights.names())
    layout = get_layout(variant.layout)
    try:
        dims = read_dims(arch, config)
        for layer in range(dims.layers):
            names = layout.layer_tensors(arch, dims, layer, available)
            metas = {n: weights.meta(n) for n in names}
            fakes = {n: torch.empty(m.shape, dtype=m.dtype, device="meta") for n, m in metas.items()}
            layout.to_heads(arch, dims, layer, fakes)
    except UptrainError as exc:
        return [str(exc)]
    return []


def _meta_model(directory: Path) -> Any:
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(directory)))


def _module_name(model: Any, module: Any) -> str:
    return next(name for name, m in model.named_modules() if m is module)


def _embeddings(directory: Path, weights: SourceCheckpoint) -> tuple[list[str], int | None]:
    """tie_word_embeddings against the stored lm_head, and the embedding's rows (the vocabulary size)."""
    try:
        model = _meta_model(directory)
    except (OSError, ValueError, KeyError) as exc:
        return [f"transformers cannot build the model from config.json: {str(exc).splitlines()[0]}"], None
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    embed = _module_name(model, inp) + ".weight"
    if embed not in weights.names():
        return [f"the weights hold no {embed}, the input embedding"], None
    rows = weights.meta(embed).shape[0]
    head = None if out is None else _module_name(model, out) + ".weight"
    for name, module in ((embed, inp), (head, out)):
        if name in weights.names() and tuple(module.weight.shape) != weights.meta(name).shape:
            return [
                f"config.json implies {name} of shape {tuple(module.weight.shape)}, but the weights hold "
                f"{weights.meta(name).shape}; fix vocab_size or the hidden size"
            ], None
    if head is None:
        return [], rows
    tied = out.weight is inp.weight
    if not tied and head not in weights.names():
        return [
            f"config.json says tie_word_embeddings false, but the weights hold no {head}: the output "
            "layer would be random; set tie_word_embeddings true or store it"
        ], rows
    if tied and head in weights.names() and not torch.equal(weights.load(head), weights.load(embed)):
        return [
            f"config.json says tie_word_embeddings true, but the stored {head} differs from {embed}; "
            "set tie_word_embeddings false"
        ], rows
    return [], rows


def _tokenizer(directory: Path, rows: int | None, check: ServingCheck) -> None:
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        check.warnings.append(f"{directory} has no tokenizer files; serving engines need the source's")
        return
    try:
        size = len(load_tokenizer(directory))
    except UptrainError as exc:
        check.errors.append(str(exc))
        return
    if rows is not None and size > rows:
        check.errors.append(f"the tokenizer has {size} tokens but the embedding only {rows} rows")


def _generation_config(directory: Path, rows: int | None, check: ServingCheck) -> None:
    from transformers import GenerationConfig

    if not (directory / "generation_config.json").is_file():
        check.warnings.append(f"{directory} has no generation_config.json; engines then use their defaults")
        return
    try:
        generation = GenerationConfig.from_pretrained(str(directory))
    except (OSError, ValueError) as exc:
        check.errors.append(f"generation_config.json does not load: {str(exc).splitlines()[0]}")
        return
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(generation, key, None)
        ids = value if isinstance(value, list) else [] if value is None else [value]
        if rows is not None and any(not 0 <= i < rows for i in ids):
            check.errors.append(f"generation_config.json's {key} {value} is outside the {rows}-row embedding")
