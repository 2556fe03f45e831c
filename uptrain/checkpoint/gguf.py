"""GGUF sources: dequantized through transformers' GGUF support (the gguf package), then converted
like any other checkpoint. The whole model is held in memory once, at the dtype asked for
(float32 by default: GGUF weights are quantized, so there is no dtype to keep)."""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path

import torch

from uptrain.checkpoint.dtypes import TORCH_DTYPES, dtype_name
from uptrain.checkpoint.loading import load_causal_lm, load_tokenizer
from uptrain.checkpoint.serving_keys import with_architectures, with_dtype
from uptrain.checkpoint.shards import MemoryShard, SourceCheckpoint
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
    """The `general.license` metadata of a GGUF file, if it has one."""
    import gguf

    try:
        field = gguf.GGUFReader(str(path)).fields.get("general.license")
        return str(field.contents()) if field is not None else None
    except Exception:  # noqa: BLE001 - unreadable metadata only means: license unknown
        return None


def open_gguf_source(
    gguf_path: Path, dtype: str | None = None, provenance: dict | None = None
) -> SourceCheckpoint:
    """Load a .gguf file with transformers and present it as a SourceCheckpoint; the tokenizer and
    generation config are staged in a temporary directory so they are copied to OUT."""
    import json

    if not gguf_path.is_file():
        raise UptrainError(f"GGUF file {gguf_path} does not exist; check the path or --gguf-file")
    torch_dtype = TORCH_DTYPES[dtype] if dtype else torch.float32
    folder, name = gguf_path.parent, gguf_path.name
    try:
        model = load_causal_lm(folder, dtype=torch_dtype, gguf_file=name)
        tokenizer = load_tokenizer(folder, gguf_file=name)
    except UptrainError as exc:
        reason = str(exc).split(": ", 1)[-1]
        raise UptrainError(f"cannot read the GGUF file {gguf_path} ({reason}); re-download it") from None
    staging = Path(tempfile.mkdtemp(prefix="uptrain-gguf-"))
    config = model.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "transformers_version"):
        config.pop(key, None)
    config = with_architectures(with_dtype(config, dtype_name(torch_dtype)))  # GGUF's config names no class
    (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tokenizer.save_pretrained(staging)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(staging)
    license_ = gguf_license(gguf_path)
    source = SourceCheckpoint(
        config=config,
        shards=[MemoryShard(unique_tensors(model.state_dict()), label=name)],
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
    with the file's identity. An `out` already made from the same file and dtype is kept as it is, so
    a pipeline that needs the model several times (convert, evaluate, distill) reads the GGUF once."""
    import json

    from safetensors.torch import save_file

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
    (shard,) = source.shards
    tensors = {name: shard.load(name).contiguous() for name in shard.names()}
    with atomic_directory(out, overwrite=True) as tmp:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        copy_side_files(source.root, tmp)
        config = with_architectures(source.config)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        write_provenance(tmp, {"created": now(), "source": source.provenance, "dequantized": identity})
    return out
