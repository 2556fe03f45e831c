"""GGUF sources: dequantized as transformers' GGUF support (the gguf package) does, then converted
like any other checkpoint, at the dtype asked for (float32 by default: GGUF weights are quantized,
so there is no dtype to keep). Where transformers maps each file tensor to one parameter (dense
architectures; tested: Llama, Qwen2, Gemma 2 and 3) the tensors are read one at a time from the
memory-mapped file (gguf_shard.py); elsewhere transformers loads the whole model into memory."""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

import torch

from uptrain.checkpoint.dtypes import TORCH_DTYPES, dtype_name
from uptrain.checkpoint.gguf_shard import GGUFShard, plan_gguf_shard
from uptrain.checkpoint.loading import load_causal_lm, load_error, load_tokenizer
from uptrain.checkpoint.serving_keys import with_architectures, with_dtype
from uptrain.checkpoint.shards import MemoryShard, SourceCheckpoint, WeightShard
from uptrain.errors import UptrainError


def unique_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop tensors that share storage with an earlier one (tied embeddings), as save_pretrained does."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for name, t in state.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        if key in seen:
            continue
        seen.add(key)
        out[name] = t
    return out


def gguf_license(path: Path) -> str | None:
    """The `general.license` metadata of a GGUF file, if it has one. transformers' metadata reader skips
    the vocabulary, so this costs milliseconds where gguf.GGUFReader parses the whole header."""
    try:
        try:
            from transformers.integrations.gguf import read_gguf_metadata
        except ImportError:  # a transformers before its own GGUF reader
            import gguf

            field = gguf.GGUFReader(str(path)).fields.get("general.license")
            return str(field.contents()) if field is not None else None
        value = read_gguf_metadata(str(path))[0].get("general.license")
        return str(value) if value is not None else None
    except Exception:  # noqa: BLE001 - unreadable metadata only means: license unknown
        return None


def _meta_model(folder: Path, name: str, torch_dtype: torch.dtype) -> Any:
    """The model transformers builds for a GGUF file, on the meta device: config, no weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(folder), gguf_file=name)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=torch_dtype, trust_remote_code=False)


def gguf_weights(folder: Path, name: str, torch_dtype: torch.dtype) -> tuple[Any, WeightShard]:
    """A model that carries the file's config and generation config, and the file's weights: read one
    tensor at a time (the model on the meta device), or, where only transformers' whole-model loading
    is exact, that model loaded and held in memory."""
    try:
        model = _meta_model(folder, name, torch_dtype)
        plan = plan_gguf_shard(str(folder / name), model, torch_dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise load_error("model", folder, exc) from None
    if plan is not None:
        return model, GGUFShard(plan, label=name)
    model = load_causal_lm(folder, dtype=torch_dtype, gguf_file=name)
    return model, MemoryShard(unique_tensors(model.state_dict()), label=name)


def staged_config(model: Any, torch_dtype: torch.dtype) -> dict:
    """config.json of a GGUF source: transformers' config of the file, with the dtype and the class
    that serving engines need, without the quantization record."""
    config = model.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "transformers_version"):
        config.pop(key, None)
    return with_architectures(with_dtype(config, dtype_name(torch_dtype)))  # GGUF's config names no class


def open_gguf_source(
    gguf_path: Path, dtype: str | None = None, provenance: dict | None = None
) -> SourceCheckpoint:
    """A .gguf file as a SourceCheckpoint whose weights are dequantized as transformers does; the
    tokenizer and generation config are staged in a temporary directory so they are copied to OUT."""
    import json

    if not gguf_path.is_file():
        raise UptrainError(f"GGUF file {gguf_path} does not exist; check the path or --gguf-file")
    torch_dtype = TORCH_DTYPES[dtype] if dtype else torch.float32
    folder, name = gguf_path.parent, gguf_path.name
    try:
        model, shard = gguf_weights(folder, name, torch_dtype)
        tokenizer = load_tokenizer(folder, gguf_file=name)
    except UptrainError as exc:
        reason = str(exc).split(": ", 1)[-1]
        raise UptrainError(f"cannot read the GGUF file {gguf_path} ({reason}); re-download it") from None
    staging = Path(tempfile.mkdtemp(prefix="uptrain-gguf-"))
    config = staged_config(model, torch_dtype)
    (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tokenizer.save_pretrained(staging)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(staging)
    license_ = gguf_license(gguf_path)
    source = SourceCheckpoint(
        config=config,
        shards=[shard],
        root=staging,
        provenance={
            **(provenance or {"path": str(gguf_path.resolve())}),
            "gguf_file": name,
            **({"license": license_} if license_ else {}),
        },
        load_path=folder,
        gguf_file=name,
    )
    weakref.finalize(source, shutil.rmtree, staging, True)
    return source


def gguf_identity(gguf_path: Path, dtype: str | None = None) -> dict:
    """What a dequantized copy was made from: the file (path, size, modification time) and the dtype."""
    stat = Path(gguf_path).stat()
    name = str(TORCH_DTYPES[dtype] if dtype else torch.float32).removeprefix("torch.")
    return {
        "gguf": str(Path(gguf_path).resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "dtype": name,
    }


def is_dequantized_copy(out: Path, gguf_path: Path, dtype: str | None = None) -> bool:
    """Whether `out` holds a dequantized copy of this very file at this dtype."""
    from uptrain.checkpoint.provenance import read_provenance

    identity = gguf_identity(gguf_path, dtype)
    return read_provenance(out).get("dequantized") == identity and (Path(out) / "model.safetensors").is_file()


def dequantize_gguf(gguf_path: Path, out: Path, dtype: str | None = None) -> Path:
    """Write a .gguf file as an ordinary safetensors checkpoint in `out`, atomically: config.json,
    the weights at `dtype` (default float32), the tokenizer and generation config, and uptrain.json
    with the file's identity. The weights are written one tensor at a time (writer.py), so memory
    stays near one tensor wherever the source is read lazily. An `out` already made from the same
    file and dtype is kept as it is, so a pipeline that needs the model several times (convert,
    evaluate, distill) reads the GGUF once."""
    import json

    from uptrain.checkpoint.atomic import atomic_directory
    from uptrain.checkpoint.provenance import now, write_provenance
    from uptrain.checkpoint.side_files import copy_side_files

    gguf_path, out = Path(gguf_path), Path(out)
    if not gguf_path.is_file():
        raise UptrainError(f"GGUF file {gguf_path} does not exist; check the path")
    if is_dequantized_copy(out, gguf_path, dtype):
        return out
    identity = gguf_identity(gguf_path, dtype)
    source = open_gguf_source(gguf_path, dtype)
    with atomic_directory(out, overwrite=True) as tmp:
        _write_weights(source, tmp / "model.safetensors")
        copy_side_files(source.root, tmp)
        config = with_architectures(source.config)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        write_provenance(tmp, {"created": now(), "source": source.provenance, "dequantized": identity})
    return out


def _write_weights(source: SourceCheckpoint, path: Path) -> None:
    """Every tensor of `source` into one safetensors file, loaded and written one at a time."""
    from uptrain.checkpoint.writer import PlannedTensor, ShardWriter

    planned = [PlannedTensor(n, source.meta(n).dtype, source.meta(n).shape) for n in source.names()]
    writer = ShardWriter(path, planned, metadata={"format": "pt"})
    try:
        for name in source.names():
            writer.write(name, source.load(name))
        writer.close()
    finally:
        writer.abort()
