"""Which checkpoint gets uptrained: model.path as it is, or model.convert's output (converted first,
from model.convert.source or from a tiny model built offline), plus the default distillation teacher.

A conversion already in OUTPUT/converted from the same source and settings is reused, so a
resumed run does not convert again. A .gguf source (or `package:MODULE/FILE` naming one) is dequantized
once into OUTPUT/source, an ordinary checkpoint that conversion, evaluation and distillation then read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uptrain.config import ModelSection
from uptrain.convert.convert import DTYPE_NAMES, DTYPES, convert_checkpoint
from uptrain.convert.gguf import dequantize_gguf, is_dequantized_copy
from uptrain.convert.source import open_source
from uptrain.errors import UptrainError
from uptrain.offline import TinyLlamaSpec, build_tiny_llama, resolve_source_ref
from uptrain.provenance import read_provenance
from uptrain.train.run_dir import RunDir


@dataclass
class Student:
    path: Path  # checkpoint directory to uptrain
    record: dict[str, Any]  # its uptrain.json (the provenance chain)
    teacher: str | None  # the model it came from, the default distillation teacher


def _open(ref: str, key: str, revision: str | None = None) -> Any:
    try:
        return open_source(ref, revision=revision)
    except UptrainError as exc:
        raise UptrainError(f"{key}: {exc}") from None


def _conversion_matches(record: dict[str, Any], source: Any, model: ModelSection) -> bool:
    conv, convert = record.get("conversion", {}), model.convert
    dtype = DTYPE_NAMES[DTYPES[convert.dtype]] if convert.dtype else "unchanged"
    return (
        record.get("source", {}).get("config_sha256") == source.provenance.get("config_sha256")
        and record.get("source", {}).get("path") == source.provenance.get("path")
        and record.get("source", {}).get("hub_id") == source.provenance.get("hub_id")
        and (conv.get("groups"), conv.get("method"), conv.get("seed"), conv.get("dtype"))
        == (convert.groups, convert.method, convert.seed, dtype)
    )


def source_ref(model: ModelSection) -> str:
    """model.convert.source with a package: reference resolved to the file's path."""
    assert model.convert is not None and model.convert.source is not None
    try:
        return resolve_source_ref(model.convert.source)
    except UptrainError as exc:
        raise UptrainError(f"model.convert.source: {exc}") from None


def prepare_student(model: ModelSection, run: RunDir, say: Callable[[str], None]) -> Student:
    """Resolve, build or convert the model to uptrain. Run it on the main process first."""
    if model.path is not None:
        source = _open(model.path, "model.path", model.revision)
        record = read_provenance(source.root) or {"source": source.provenance}
        origin = record.get("source", {})
        return Student(source.root, record, origin.get("path") or origin.get("hub_id"))

    convert = model.convert
    assert convert is not None
    if model.tiny is not None:
        spec = TinyLlamaSpec(**vars(model.tiny))
        if read_provenance(run.source).get("built") != {"kind": "tiny-llama", **vars(model.tiny)}:
            say(
                f"building a tiny random MHA Llama ({spec.layers} layers, {spec.heads} heads) in {run.source}"
            )
        ref = str(build_tiny_llama(run.source, spec))
    else:
        ref = source_ref(model)
        if ref.lower().endswith(".gguf") and Path(ref).is_file():
            if not is_dequantized_copy(run.source, Path(ref), convert.dtype):
                say(f"reading {Path(ref).name} into {run.source} (dequantized, once)")
            ref = str(dequantize_gguf(Path(ref), run.source, convert.dtype))
    source = _open(ref, "model.convert.source", convert.revision)
    record = read_provenance(run.converted)
    if not (run.converted.is_dir() and _conversion_matches(record, source, model)):
        say(f"converting {ref} to {convert.groups} KV heads ({convert.method}) in {run.converted}")
        result = convert_checkpoint(
            source,
            run.converted,
            convert.groups,
            method=convert.method,
            dtype=convert.dtype,
            seed=convert.seed,
            overwrite=True,
        )
        record = result.record
    return Student(run.converted, record, str(source.root))
