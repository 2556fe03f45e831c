"""Which checkpoint gets uptrained: model.path as it is, or model.convert's output (converted first,
from model.convert.source or from a tiny model built offline), plus the default distillation teacher.
model.tiny alone is a random model to pre-train from scratch.

A conversion already in OUTPUT/converted from the same source and settings is reused, so a
resumed run does not convert again. A .gguf source (or `package:MODULE/FILE` naming one) is dequantized
once into OUTPUT/source, an ordinary checkpoint that conversion, evaluation and distillation then read.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from uptrain.architectures import plan_route
from uptrain.checkpoint.gguf import dequantize_gguf, is_dequantized_copy
from uptrain.checkpoint.loading import check_remote_code, load_tokenizer
from uptrain.checkpoint.offline import TinyLlamaSpec, build_tiny_llama, resolve_source_ref, tiny_llama_config
from uptrain.checkpoint.provenance import read_provenance
from uptrain.checkpoint.source import open_source
from uptrain.config import ModelSection
from uptrain.convert.convert import DTYPE_NAMES, DTYPES, convert_checkpoint
from uptrain.errors import UptrainError
from uptrain.train.prepared import PreparedModel
from uptrain.train.run_dir import RunDir


def _open(ref: str, key: str, revision: str | None = None, with_code: bool = False) -> Any:
    try:
        return open_source(ref, revision=revision, with_code=with_code)
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
        and conv.get("convert_settings", {}).get("calibration") == _calibration_settings(convert)
    )


def _calibration_settings(convert: Any) -> dict[str, Any] | None:
    """The model.convert keys a calibrated method depends on (None for mean/first/random)."""
    from uptrain.convert.methods.pipeline import CALIBRATED, parse_method

    if not CALIBRATED & set(parse_method(convert.method)):
        return None
    return {k: v for k, v in vars(convert).items() if k.startswith(("calibration_", "refine_"))}


def check_convert_method(convert: Any) -> None:
    """model.convert.method and its calibration numbers, with errors naming the config keys."""
    try:
        _conversion_arguments(convert)
    except UptrainError as exc:
        text = (
            str(exc)
            .replace("--method", "model.convert.method")
            .replace("--calibration-", "model.convert.calibration_")
        )
        raise UptrainError(text.replace("seq-len", "seq_len")) from None
    data = convert.calibration_data
    if _calibration_settings(convert) is not None and data is not None:
        spec = _conversion_arguments(convert)["calibration_spec"]
        if spec.data.is_local and not Path(data).expanduser().exists():
            raise UptrainError(f"model.convert.calibration_data: {data} does not exist; fix the path")


def _conversion_arguments(convert: Any) -> dict[str, Any]:
    """convert_checkpoint's calibration arguments for a calibrated model.convert.method."""
    from uptrain.convert.calibration import calibration_spec
    from uptrain.convert.methods.pipeline import MethodOptions

    settings = _calibration_settings(convert)
    if settings is None:
        return {}
    spec = calibration_spec(
        convert.calibration_data,
        convert.calibration_config,
        convert.calibration_split,
        convert.calibration_text_column,
        convert.calibration_tokens,
        convert.calibration_seq_len,
    )
    return {"calibration_spec": spec, "method_options": MethodOptions(refine_steps=convert.refine_steps)}


def _route(config: dict, groups: int, source_key: str) -> None:
    """plan_route's verdict on G, its errors named by the config key to fix."""
    try:
        plan_route(config, groups)
    except UptrainError as exc:
        text = str(exc)
        if text.startswith("--groups"):
            raise UptrainError("model.convert.groups" + text.removeprefix("--groups")) from None
        raise UptrainError(f"{source_key}: {text}") from None


def _check_tokenizer(ref: str, key: str, config: dict, trust_remote_code: bool) -> None:
    try:
        n = len(load_tokenizer(ref, trust_remote_code))
    except UptrainError as exc:
        raise UptrainError(f"{key}: {exc}; set model.tokenizer to the model's tokenizer") from None
    vocab = config.get("vocab_size")
    if isinstance(vocab, int) and n > vocab:
        raise UptrainError(
            f"{key}: the tokenizer {ref} has {n} tokens but the model has {vocab} embeddings; "
            "set model.tokenizer to the tokenizer that belongs to the model"
        )


def check_student(model: ModelSection) -> None:
    """What can be checked before the run writes anything: a local model.path or convert source
    (config, safetensors weights, no unasked custom code), G, and that the tokenizer fits the
    model's vocabulary. A Hub source is checked after its download."""
    trust = model.trust_remote_code
    if model.convert is not None:
        check_convert_method(model.convert)
    if model.tiny is not None:
        # sized for model.tokenizer when it is built, so only G is checked here
        config = {"model_type": "llama", **tiny_llama_config(TinyLlamaSpec(**vars(model.tiny)))}
        key, tokenizer_key = "model.tiny", None
    else:
        ref = model.path if model.path is not None else source_ref(model)
        key = "model.path" if model.path is not None else "model.convert.source"
        if not Path(ref).expanduser().is_dir():
            return
        config = _open(ref, key).config
        check_remote_code(config, key, trust)
        tokenizer_key = key
    if model.convert is not None:
        _route(config, model.convert.groups, key)
    if model.tokenizer is not None and model.tiny is None:
        if Path(model.tokenizer).expanduser().is_dir():
            _check_tokenizer(model.tokenizer, "model.tokenizer", config, trust)
    elif tokenizer_key is not None:
        _check_tokenizer(ref, tokenizer_key, config, trust)


def source_ref(model: ModelSection) -> str:
    """model.convert.source with a package: reference resolved to the file's path."""
    assert model.convert is not None and model.convert.source is not None
    try:
        return resolve_source_ref(model.convert.source)
    except UptrainError as exc:
        raise UptrainError(f"model.convert.source: {exc}") from None


def prepare_student(model: ModelSection, run: RunDir, say: Callable[[str], None]) -> PreparedModel:
    """Resolve, build or convert the model to uptrain. Run it on the main process first."""
    if model.path is not None:
        source = _open(model.path, "model.path", model.revision, model.trust_remote_code)
        check_remote_code(source.config, "model.path", model.trust_remote_code)
        record = read_provenance(source.root) or {"source": source.provenance}
        origin = record.get("source", {})
        return PreparedModel(source.root, record, origin.get("path") or origin.get("hub_id"))

    convert = model.convert
    if model.tiny is not None:
        spec = TinyLlamaSpec(**vars(model.tiny))
        say(f"building a tiny random MHA Llama ({spec.layers} layers, {spec.heads} heads) in {run.source}")
        tokenizer = load_tokenizer(model.tokenizer, model.trust_remote_code) if model.tokenizer else None
        ref = str(build_tiny_llama(run.source, spec, tokenizer))
        if convert is None:
            return PreparedModel(run.source, read_provenance(run.source), None, from_scratch=True)
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
            extra_record={"convert_settings": {"calibration": _calibration_settings(convert)}},
            **_conversion_arguments(convert),
        )
        record = result.record
    return PreparedModel(run.converted, record, str(source.root))
