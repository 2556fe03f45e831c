"""A checkpoint's license, read from its model card's YAML front matter."""

from __future__ import annotations

from pathlib import Path


def front_matter_license(readme: Path) -> dict[str, str]:
    """license, license_name and license_link from a model card's YAML front matter."""
    from huggingface_hub.repocard import metadata_load

    try:
        meta = metadata_load(readme) or {}
    except Exception:  # noqa: BLE001 - an unreadable or malformed card only means: license unknown
        return {}
    return {k: str(meta[k]) for k in ("license", "license_name", "license_link") if meta.get(k)}
