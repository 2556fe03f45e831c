"""What a model card is made of, read from uptrain.json, an evaluation report and the source.

Every section is optional except `conversion`: other stages (train, eval, run) add theirs, and a
card leaves out, or marks as not measured, whatever is missing. The keys read are listed in
uptrain/hub/card.py's docstring; this module only finds and normalises them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from uptrain.checkpoint.license import front_matter_license
from uptrain.checkpoint.snapshot import is_hub_id
from uptrain.errors import UptrainError

ROLES = ("source", "converted", "uptrained")
_DATA_FILE_SUFFIXES = (".txt", ".json", ".jsonl", ".parquet", ".csv", ".arrow", ".gz", ".zst")


def load_report(path: Path) -> dict[str, Any]:
    """An evaluation report (report.json of `uptrain run`, or `uptrain eval --json`)."""
    path = Path(path)
    if not path.is_file():
        raise UptrainError(
            f"report {path} does not exist; pass the report.json written by uptrain run or eval"
        )
    try:
        report = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise UptrainError(f"report {path} is not valid JSON ({exc}); regenerate it") from None
    if not isinstance(report, dict):
        raise UptrainError(f"report {path} is not a JSON object; regenerate it")
    return report


def provenance_chain(record: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """This checkpoint's record, then its source's uptrain.json, and so on back to the original."""
    seen = 0
    while isinstance(record, dict) and record and seen < 32:
        yield record
        record = (record.get("source") or {}).get("uptrain") or {}
        seen += 1


def base_model_id(record: dict[str, Any]) -> str | None:
    """The Hub id of the model this one descends from: the nearest source along the chain with one."""
    for rec in provenance_chain(record):
        hub_id = (rec.get("source") or {}).get("hub_id")
        if isinstance(hub_id, str) and hub_id:
            return hub_id
    return None


def _cached_readme(hub_id: str, commit: str | None) -> Path | None:
    """The source's README.md if it is in the local Hugging Face cache (no network)."""
    from huggingface_hub import try_to_load_from_cache

    for revision in (commit, None):
        try:
            found = try_to_load_from_cache(hub_id, "README.md", revision=revision)
        except Exception:  # noqa: BLE001 - an odd id or cache layout means: not cached
            found = None
        if isinstance(found, str):
            return Path(found)
    return None


def source_license(record: dict[str, Any], config: dict[str, Any] | None = None) -> dict[str, str]:
    """The license of the original model where it is known without the network, else {}.

    Looked for, in order: a `license` recorded in uptrain.json (any record along the chain), the
    checkpoint's config.json, then the card (README.md front matter) of each source along the chain:
    a local source directory that still exists, or a Hub source whose card is in the local cache.
    """
    for rec in provenance_chain(record):
        for holder in (rec, rec.get("source") or {}):
            if holder.get("license"):
                keys = ("license", "license_name", "license_link")
                return {k: str(holder[k]) for k in keys if holder.get(k)}
    if config and config.get("license"):
        return {"license": str(config["license"])}
    for rec in provenance_chain(record):
        src = rec.get("source") or {}
        readme = None
        if src.get("path") and (Path(src["path"]) / "README.md").is_file():
            readme = Path(src["path"]) / "README.md"
        elif src.get("hub_id"):
            readme = _cached_readme(src["hub_id"], src.get("commit"))
        found = front_matter_license(readme) if readme else {}
        if found:
            return found
    return {}


def _dataset_name(dataset: Any) -> str | None:
    if isinstance(dataset, dict):
        for key in ("id", "hub_id", "dataset", "path", "name"):  # datasets: path = the id, name = config
            if isinstance(dataset.get(key), str):
                return dataset[key]
        return None
    return dataset if isinstance(dataset, str) and dataset else None


def is_hub_dataset_id(name: str) -> bool:
    """Whether a dataset reference looks like a Hub id (not a local file or directory)."""
    return is_hub_id(name) and not name.lower().endswith(_DATA_FILE_SUFFIXES) and not name.startswith(".")


def training_datasets(record: dict[str, Any]) -> list[str]:
    """Every dataset the chain was uptrained on, nearest first, without repeats."""
    names: list[str] = []
    for rec in provenance_chain(record):
        training = rec.get("training") or {}
        candidates = [training.get("dataset"), training.get("datasets")]
        config = training.get("config")
        if isinstance(config, dict):
            data = config.get("data") or {}
            candidates += [config.get("dataset"), data.get("dataset") if isinstance(data, dict) else None]
        for candidate in candidates:
            for item in candidate if isinstance(candidate, list) else [candidate]:
                name = _dataset_name(item)
                if name and name not in names:
                    names.append(name)
    return names


def _number(value: Any) -> float | None:
    if isinstance(value, dict):  # {"perplexity": x} or {"value": x}
        value = value.get("value", value.get("perplexity"))
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _role(entry: dict[str, Any]) -> str | None:
    for key in ("role", "name", "label"):
        value = str(entry.get(key) or "").lower()
        if value in ROLES:
            return value
    folder = Path(str(entry.get("path") or "")).name.lower()
    return {"converted": "converted", "final": "uptrained", "source": "source"}.get(folder)


def _entries(section: Any) -> list[dict[str, Any]]:
    if isinstance(section, dict) and "models" in section:
        section = section["models"]
    if isinstance(section, dict):  # {role: {...}}
        return [{"role": k, **v} for k, v in section.items() if isinstance(v, dict)]
    return [e for e in section if isinstance(e, dict)] if isinstance(section, list) else []


def model_results(record: dict[str, Any], report: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Per role (source, converted, uptrained): perplexity, word_perplexity, bits_per_byte,
    kv_bytes_per_token and path, from uptrain.json's `evaluation` and then the report (which wins)."""
    results: dict[str, dict[str, Any]] = {}
    for section in (record.get("evaluation"), report):
        for entry in _entries(section):
            role = _role(entry)
            if role is None:
                continue
            kv = entry.get("kv_bytes_per_token", (entry.get("kv_bytes") or {}))
            if isinstance(kv, dict):
                kv = kv.get("per_token")
            row = {
                "perplexity": _number(entry.get("perplexity", entry.get("ppl"))),
                "word_perplexity": _number(entry.get("word_perplexity")),
                "bits_per_byte": _number(entry.get("bits_per_byte")),
                "kv_bytes_per_token": int(kv) if isinstance(kv, (int, float)) else None,
                "path": entry.get("path") or entry.get("name"),
            }
            merged = results.setdefault(role, {})
            merged.update({k: v for k, v in row.items() if v is not None})
    return results


def evaluation_setting(record: dict[str, Any], report: dict[str, Any] | None) -> dict[str, Any]:
    """Dataset, split, tokens scored, window and stride of the perplexity measurement."""
    setting: dict[str, Any] = {}
    for section in (record.get("evaluation"), report):
        if not isinstance(section, dict):
            continue
        for key in ("dataset", "dataset_config", "split", "window", "stride"):
            if section.get(key) is not None:
                setting[key] = section[key]
        tokens = section.get("tokens", section.get("tokens_scored"))
        if isinstance(tokens, int):
            setting["tokens"] = tokens
    if "dataset" in setting:
        setting["dataset"] = _dataset_name(setting["dataset"]) or str(setting["dataset"])
    return setting
