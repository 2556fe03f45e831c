"""Which checkpoint gets uptrained: model.path as it is, or model.convert's output (converted first,
from model.convert.source or from a tiny model built offline), plus the default distillation teacher.
model.tiny alone is a random model to pre-train from scratch.

A conversion already in OUTPUT/converted from the same source and settings is reused, so a
resumed run does not convert again. A .gguf source (or `package:MODULE/FILE` naming one) is dequantized
once into OUTPUT/source, an ordinary checkpoint that conversion, evaluation and distillation then read.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from uptrain.architectures import Route, plan_route
from uptrain.checkpoint.dtypes import DTYPE_NAMES, DTYPES
from uptrain.checkpoint.gguf import dequantize_gguf, is_dequantized_copy
from uptrain.checkpoint.loading import check_remote_code, load_tokenizer
from uptrain.checkpoint.offline import TinyLlamaSpec, build_tiny_llama, resolve_source_ref, tiny_llama_config
from uptrain.checkpoint.provenance import read_provenance
from uptrain.checkpoint.source import open_source
from uptrain.config import BUILTIN_PREFIX, ConvertSection, DataSection, ModelSection, UptrainConfig
from uptrain.convert.convert import CheckedConversion, check_conversion, convert_checkpoint
from uptrain.data import TextSource
from uptrain.errors import SettingError, UptrainError
from uptrain.pipeline.model_config import ModelChecked
from uptrain.train.prepared import PreparedModel
from uptrain.train.run_dir import RunDir


def _open(
    ref: str, key: str, revision: str | None = None, with_code: bool = False, allow_pickle: bool = False
) -> Any:
    try:
        return open_source(ref, revision=revision, with_code=with_code, allow_pickle=allow_pickle)
    except UptrainError as exc:
        raise UptrainError(f"{key}: {exc}") from None


def config_key(field: str) -> str:
    """A conversion setting as a run config names it: groups -> model.convert.groups."""
    return f"model.convert.{field}"


@contextlib.contextmanager
def _conversion_settings_named() -> Iterator[None]:
    """The converter names a bad setting by its field; here it is a key of the run config."""
    try:
        yield
    except SettingError as exc:
        raise UptrainError(exc.said(config_key), exc.exit_code) from None


def _calibration_settings(conversion: CheckedConversion) -> dict[str, Any] | None:
    """The model.convert keys a calibrated method depends on (None for mean/first/random)."""
    if not conversion.steps.calibrates:
        return None
    keys = ("calibration_", "refine_", "sequential")
    return {k: v for k, v in vars(conversion.settings).items() if k.startswith(keys)}


def _conversion_matches(record: dict[str, Any], source: Any, conversion: CheckedConversion) -> bool:
    conv, convert = record.get("conversion", {}), conversion.settings
    dtype = DTYPE_NAMES[DTYPES[convert.dtype]] if convert.dtype else "unchanged"
    return (
        record.get("source", {}).get("config_sha256") == source.provenance.get("config_sha256")
        and record.get("source", {}).get("path") == source.provenance.get("path")
        and record.get("source", {}).get("hub_id") == source.provenance.get("hub_id")
        and (conv.get("groups"), conv.get("method"), conv.get("seed"), conv.get("dtype"))
        == (convert.groups, convert.method, convert.seed, dtype)
        and conv.get("convert_settings", {}).get("calibration") == _calibration_settings(conversion)
    )


def check_convert_method(convert: ConvertSection) -> CheckedConversion:
    """model.convert's settings that need no source (method, calibration numbers, local text),
    checked once: the result is what conversion trusts."""
    with _conversion_settings_named():
        checked = check_conversion(convert)
    data, spec = convert.calibration_data, checked.calibration
    if spec is not None and data is not None and spec.data.is_local and not Path(data).expanduser().exists():
        raise UptrainError(f"model.convert.calibration_data: {data} does not exist; fix the path")
    return checked


def _route(config: dict, groups: int, source_key: str) -> Route:
    """plan_route's verdict on G, its errors named by the config key to fix."""
    try:
        return plan_route(config, groups)
    except SettingError as exc:
        raise UptrainError(exc.said(config_key)) from None
    except UptrainError as exc:
        raise UptrainError(f"{source_key}: {exc}") from None


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


def check_student(model: ModelSection) -> ModelChecked:
    """What can be checked before the run writes anything: model.convert's settings (returned
    checked, for prepare_student), a local model.path or convert source (config, safetensors weights,
    no unasked custom code), G (its route returned), and that the tokenizer fits the model's
    vocabulary. A Hub source is checked after its download."""
    trust = model.trust_remote_code
    conversion = None if model.convert is None else check_convert_method(model.convert)
    if model.tiny is not None:
        # sized for model.tokenizer when it is built, so only G is checked here
        config = {"model_type": "llama", **tiny_llama_config(TinyLlamaSpec(**vars(model.tiny)))}
        key, tokenizer_key = "model.tiny", None
    else:
        ref = model.path if model.path is not None else source_ref(model)
        key = "model.path" if model.path is not None else "model.convert.source"
        if not Path(ref).expanduser().is_dir():
            return ModelChecked(conversion)
        config = _open(ref, key).config
        check_remote_code(config, key, trust)
        tokenizer_key = key
    route = None if model.convert is None else _route(config, model.convert.groups, key)
    if model.tokenizer is not None and model.tiny is None:
        if Path(model.tokenizer).expanduser().is_dir():
            _check_tokenizer(model.tokenizer, "model.tokenizer", config, trust)
    elif tokenizer_key is not None:
        _check_tokenizer(ref, tokenizer_key, config, trust)
    return ModelChecked(conversion, route)


def source_ref(model: ModelSection) -> str:
    """model.convert.source with a package: reference resolved to the file's path."""
    assert model.convert is not None and model.convert.source is not None
    try:
        return resolve_source_ref(model.convert.source)
    except UptrainError as exc:
        raise UptrainError(f"model.convert.source: {exc}") from None


def calibrating_on_training_text(convert: ConvertSection, data: DataSection) -> bool:
    """Whether model.convert calibrates on the text (and split) that training reads."""
    if convert.calibration_data is None or convert.calibration_data != data.dataset:
        return False
    own_config = data.dataset.startswith(BUILTIN_PREFIX) or TextSource(data.dataset).is_local
    return (
        convert.calibration_split == data.split
        and convert.calibration_text_column == data.text_column
        and (own_config or (convert.calibration_config or None) == (data.config or None))
    )


def run_model_section(cfg: UptrainConfig) -> ModelSection:
    """cfg.model as a run converts it: calibration on the training text never sees the held-out
    blocks (the first eval.blocks x data.seq_len tokens when eval.split is null), nor one calibration
    sequence after them, which absorbs how the two tokenizations differ at document ends."""
    convert = cfg.model.convert
    if convert is None or cfg.eval.split is not None or not calibrating_on_training_text(convert, cfg.data):
        return cfg.model
    skip = cfg.eval.blocks * cfg.data.seq_len + convert.calibration_seq_len
    if convert.calibration_skip_tokens >= skip:
        return cfg.model
    return dataclasses.replace(cfg.model, convert=dataclasses.replace(convert, calibration_skip_tokens=skip))


def prepare_student(
    model: ModelSection,
    run: RunDir,
    say: Callable[[str], None],
    conversion: CheckedConversion | None = None,
    route: Route | None = None,
) -> PreparedModel:
    """Resolve, build or convert the model to uptrain. Run it on the main process first.
    `conversion` is model.convert as the command's door checked it (check_student), `route` its route
    as the door planned it; without them, model.convert is checked (and its route planned) here."""
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
        if convert.gguf_file and Path(ref).expanduser().is_dir():  # a .gguf file inside a local folder
            ref = str(Path(ref).expanduser() / convert.gguf_file)
        if ref.lower().endswith(".gguf") and Path(ref).is_file():
            if not is_dequantized_copy(run.source, Path(ref), convert.dtype):
                say(f"reading {Path(ref).name} into {run.source} (dequantized, once)")
            ref = str(dequantize_gguf(Path(ref), run.source, convert.dtype))
    source = _open(ref, "model.convert.source", convert.revision, allow_pickle=convert.allow_pickle)
    record = read_provenance(run.converted)
    conversion = conversion or check_convert_method(convert)
    if not (run.converted.is_dir() and _conversion_matches(record, source, conversion)):
        say(f"converting {ref} to {convert.groups} KV heads ({convert.method}) in {run.converted}")
        with _conversion_settings_named():
            result = convert_checkpoint(
                source,
                run.converted,
                conversion,
                overwrite=True,
                extra_record={"convert_settings": {"calibration": _calibration_settings(conversion)}},
                route=route,
            )
        record = result.record
    return PreparedModel(run.converted, record, str(source.root))
