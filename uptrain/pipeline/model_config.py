"""The config.json of the model that training will receive, known before anything is converted, built
or written: model.tiny's, model.path's, or model.convert.source's as the conversion will rewrite it.
The settings that depend on it (data.seq_len, train.trainable) are checked against it here, so that a
mistake in them stops `uptrain train` and `uptrain run` before their first file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from uptrain.architectures.route import Route, output_config, plan_route
from uptrain.checkpoint.meta import fetch_config, meta_model
from uptrain.checkpoint.offline import TinyLlamaSpec, resolve_source_ref, tiny_llama_config
from uptrain.config import ModelSection, UptrainConfig
from uptrain.errors import UptrainError
from uptrain.train.builders import check_choices
from uptrain.train.model_checks import check_seq_len, check_trainable

if TYPE_CHECKING:
    from uptrain.convert.checked import CheckedConversion


def source_config(model: ModelSection, download: bool) -> dict | None:
    """config.json of what model.path or model.convert.source (or model.tiny) names; None for a .gguf
    file, and for a Hub model unless `download` (config.json only)."""
    if model.tiny is not None:
        return {"model_type": "llama", **tiny_llama_config(TinyLlamaSpec(**vars(model.tiny)))}
    if model.path is not None:
        ref, key, revision = model.path, "model.path", model.revision
    elif model.convert is not None and model.convert.source is not None:
        ref, key = resolve_source_ref(model.convert.source), "model.convert.source"
        revision = model.convert.revision
    else:
        return None
    path = Path(ref).expanduser()
    if path.is_file() or not (path.is_dir() or download):
        return None
    try:
        return fetch_config(ref, revision)
    except UptrainError as exc:
        raise UptrainError(f"{key}: {exc}") from None


def student_config(model: ModelSection, download: bool = False, route: Route | None = None) -> dict | None:
    """config.json of the model training starts from: the source's, converted to G KV heads when
    model.convert is set (by `route` when the door planned it, else planned here)."""
    config = source_config(model, download)
    if config is None or model.convert is None or model.path is not None:
        return config
    try:
        return output_config(route or plan_route(config, model.convert.groups), config)
    except UptrainError:
        return None  # the conversion's own checks name the problem (check_student)


def check_model_settings(cfg: UptrainConfig, config: dict | None) -> None:
    """data.seq_len and train.trainable against the student's config (when it is known)."""
    if config is None:
        return
    check_seq_len(cfg.data.seq_len, config)
    if cfg.train.trainable:
        model = meta_model(config)
        if model is not None:
            check_trainable(cfg.train.trainable, model)


@dataclass(frozen=True)
class ModelChecked:
    """What a command's door checked of the model (student.check_student, for training.check_model
    and run.check_run_config): the stages and the training trust it."""

    conversion: CheckedConversion | None = None  # model.convert, as the run converts it
    # model.convert's route, planned once from the source's config.json at the door; None without
    # model.convert, or for a Hub source (planned from its config.json by check_before_writing)
    route: Route | None = None


def check_before_writing(cfg: UptrainConfig, checked: ModelChecked) -> None:
    """What `uptrain train` and `uptrain run` check against the model before their first file. A Hub
    model's config.json is fetched for it; when that fails, the download proper reports why later."""
    check_choices(cfg)
    try:
        config = student_config(cfg.model, download=True, route=checked.route)
    except UptrainError:
        config = None
    check_model_settings(cfg, config)
