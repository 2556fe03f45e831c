"""docs/config.md, generated from the schema: `python -m uptrain.config > docs/config.md`."""

from __future__ import annotations

import yaml

from uptrain.config.schema import describe_fields
from uptrain.config.sections import UptrainConfig


def config_reference_markdown() -> str:
    """docs/config.md: every key with its type, default and meaning (`python -m uptrain.config`)."""
    lines = [
        "# `uptrain train` and `uptrain run` config reference",
        "",
        "Generated from uptrain/config/sections.py: `python -m uptrain.config > docs/config.md` "
        "(a test checks it).",
        "`uptrain train` reads every section but `report` and `push`, which only `uptrain run` uses.",
        "Any key can be overridden on the command line: `--set optim.lr=3e-4`. Unknown keys are errors.",
        "",
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]
    for key, type_label, default, doc in describe_fields(UptrainConfig):
        if type_label == "section":
            lines.append(f"| **`{key}`** | section | | {doc} |")
            continue
        shown = "null" if default is None else yaml.safe_dump(default, default_flow_style=True).strip()
        shown = shown.removesuffix("...").strip()
        lines.append(f"| `{key}` | {type_label} | `{shown}` | {doc} |")
    return "\n".join(lines) + "\n"
