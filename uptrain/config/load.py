"""Reading a config: YAML in, overrides applied, validated (types by the schema, ranges here), YAML out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from uptrain.config.schema import apply_override, load_dataclass, read_yaml_mapping, to_plain
from uptrain.config.sections import UptrainConfig
from uptrain.errors import UptrainError

MAX_SEED = 2**32 - 1  # what torch, numpy and random all accept
MAX_THREADS = 1024


def _positive(where: str, **values: float | None) -> None:
    for key, value in values.items():
        if value is not None and value <= 0:
            raise UptrainError(f"{where}{key} must be > 0, not {value}")


def check_config(cfg: UptrainConfig, where: str = "") -> None:
    """What types alone cannot say: exclusive choices, ranges."""
    m = cfg.model
    if m.path is not None and m.tiny is not None:
        raise UptrainError(
            f"{where}model.tiny builds a source to convert or pre-train; drop it or model.path"
        )
    if (m.path is None) == (m.convert is None) and not (m.tiny is not None and m.convert is None):
        raise UptrainError(
            f"{where}set exactly one of model.path (a GQA checkpoint) or model.convert "
            "(or model.tiny alone, to pre-train from scratch)"
        )
    if m.convert is not None:
        if m.convert.target != "gqa":
            raise UptrainError(
                f"{where}model.convert.target {m.convert.target} is not run by uptrain run yet; convert with "
                "uptrain convert --target mla and point model.path at the output"
            )
        if m.convert.groups is None:
            raise UptrainError(f"{where}model.convert.groups is required; set the number of KV heads")
        if (m.convert.source is None) == (m.tiny is None):
            raise UptrainError(f"{where}set exactly one of model.convert.source or model.tiny")
    elif m.tiny is not None and cfg.budget.max_tokens is None and cfg.budget.max_steps is None:
        raise UptrainError(
            f"{where}pre-training model.tiny from scratch has no pre-training to take a fraction of; "
            "set budget.max_tokens or budget.max_steps"
        )
    _positive(f"{where}model.convert.", groups=m.convert.groups if m.convert else None)
    _check_sources(cfg, where)
    if cfg.data.seq_len < 2:
        raise UptrainError(f"{where}data.seq_len must be at least 2, not {cfg.data.seq_len}")
    _positive(f"{where}data.", shuffle_buffer=cfg.data.shuffle_buffer)
    _positive(f"{where}data.", num_proc=cfg.data.num_proc)
    b = cfg.budget
    if not 0 < b.fraction <= 1:
        raise UptrainError(f"{where}budget.fraction must be in (0, 1], not {b.fraction}")
    _positive(f"{where}budget.", max_steps=b.max_steps)
    _positive(f"{where}optim.", lr=cfg.optim.lr)
    if len(cfg.optim.betas) != 2 or not all(0 <= x < 1 for x in cfg.optim.betas):
        raise UptrainError(f"{where}optim.betas must be two numbers in [0, 1), not {cfg.optim.betas}")
    if not 0 <= cfg.optim.warmup < 1:
        raise UptrainError(f"{where}optim.warmup must be in [0, 1), not {cfg.optim.warmup}")
    t = cfg.train
    _positive(f"{where}train.", per_device_batch=t.per_device_batch, grad_accum=t.grad_accum)
    _positive(f"{where}train.", cpu_threads=t.cpu_threads)
    if t.cpu_threads is not None and t.cpu_threads > MAX_THREADS:
        raise UptrainError(f"{where}train.cpu_threads must be at most {MAX_THREADS}, not {t.cpu_threads}")
    if t.lora is not None:
        _positive(f"{where}train.lora.", rank=t.lora.rank, alpha=t.lora.alpha)
        if not 0 <= t.lora.dropout < 1:
            raise UptrainError(f"{where}train.lora.dropout must be in [0, 1), not {t.lora.dropout}")
    seeds = {"train.seed": t.seed, "model.convert.seed": m.convert.seed if m.convert else 0}
    seeds["model.tiny.seed"] = m.tiny.seed if m.tiny else 0
    for key, seed in seeds.items():
        if not 0 <= seed <= MAX_SEED:
            raise UptrainError(f"{where}{key} must be between 0 and {MAX_SEED}, not {seed}")
    d = cfg.distill
    if not 0 <= d.weight <= 1:
        raise UptrainError(f"{where}distill.weight must be in [0, 1], not {d.weight}")
    _positive(f"{where}distill.", temperature=d.temperature)
    _positive(f"{where}eval.", blocks=cfg.eval.blocks, batch_size=cfg.eval.batch_size)
    _positive(f"{where}checkpoint.", keep_last=cfg.checkpoint.keep_last)
    r = cfg.report
    _positive(f"{where}report.", max_tokens=r.max_tokens, window=r.window, stride=r.stride)
    _positive(f"{where}report.", batch_size=r.batch_size, kv_context=r.kv_context)
    _positive(f"{where}logging.", every_steps=cfg.logging.every_steps)
    for key, value in (("eval", cfg.eval.every_steps), ("checkpoint", cfg.checkpoint.every_steps)):
        if value < 0:
            raise UptrainError(f"{where}{key}.every_steps must be >= 0, not {value}")


def _check_sources(cfg: UptrainConfig, where: str) -> None:
    """data.dataset or data.mix (not both), each mix entry named and weighed; eval.dataset or eval.split."""
    d, e = cfg.data, cfg.eval
    if d.mix and d.dataset is not None:
        raise UptrainError(
            f"{where}data.mix replaces data.dataset; set data.dataset to null (--set data.dataset=null)"
        )
    if not d.mix and d.dataset is None:
        raise UptrainError(
            f"{where}data.dataset is null and data.mix is empty; name the training text in one of them"
        )
    for i, source in enumerate(d.mix):
        if source.dataset is None:
            raise UptrainError(f"{where}data.mix[{i}] has no dataset; give each entry a dataset")
        if source.weight < 0:
            raise UptrainError(f"{where}data.mix[{i}].weight must be >= 0, not {source.weight}")
    if d.mix and not sum(source.weight for source in d.mix) > 0:
        raise UptrainError(f"{where}data.mix weights are all zero; give at least one source a weight > 0")
    if e.dataset is not None and e.split is not None:
        raise UptrainError(f"{where}eval.dataset and eval.split both name held-out text; drop one of them")
    if e.dataset is not None and e.dataset.dataset is None:
        raise UptrainError(f"{where}eval.dataset has no dataset; name a text or set eval.dataset to null")
    if d.mix and e.split is not None:
        raise UptrainError(
            f"{where}eval.split does not apply to data.mix; use eval.dataset, or drop eval.split"
        )


def parse_config(raw: dict[str, Any], overrides: list[str] = (), where: str = "") -> UptrainConfig:
    """A validated config from a raw mapping and `key=value` overrides."""
    raw = dict(raw)
    for assignment in overrides:
        apply_override(UptrainConfig, raw, assignment)
    cfg = load_dataclass(UptrainConfig, raw, where=where)
    check_config(cfg, where)
    return cfg


def load_config(path: str | Path, overrides: list[str] = ()) -> UptrainConfig:
    """Read, validate and override a YAML config file."""
    path = Path(path)
    if path.is_dir():
        raise UptrainError(f"config file {path} is a directory; pass the YAML file to --config")
    if not path.is_file():
        raise UptrainError(f"config file {path} does not exist; check --config")
    where = f"{path}: "
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UptrainError(f"{where}is not UTF-8 text; pass a YAML file to --config") from None
    except OSError as exc:
        raise UptrainError(f"{where}cannot be read ({exc.strerror}); check --config") from None
    return parse_config(read_yaml_mapping(text, where), list(overrides), where)


def dump_config(cfg: UptrainConfig) -> str:
    """The resolved config as YAML (every field, defaults included)."""
    return yaml.safe_dump(to_plain(cfg), sort_keys=False, default_flow_style=False)
