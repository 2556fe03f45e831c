"""The output directory of a training run, and whether a run may start or resume there.

OUTPUT/config.yaml      the resolved config (every field)
OUTPUT/source/          model.tiny: the built MHA source
OUTPUT/converted/       model.convert: the converted checkpoint
OUTPUT/data/            builtin: texts, as files
OUTPUT/checkpoints/     step-00000500/ ... (accelerate state + trainer_state.json)
OUTPUT/final/           the uptrained checkpoint (safetensors, tokenizer, uptrain.json)
OUTPUT/metrics.jsonl    training and held-out records
OUTPUT/tensorboard/     when logging.tensorboard
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from uptrain.checkpoint.atomic import atomic_write_text
from uptrain.errors import UptrainError
from uptrain.train.checkpoints import latest_checkpoint

# Keys that may change between a run and its resumption; everything else must match.
RESUMABLE_CHANGES = ("output", "logging.", "checkpoint.", "eval.every_steps", "report.", "push.")


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def source(self) -> Path:
        return self.root / "source"

    @property
    def converted(self) -> Path:
        return self.root / "converted"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def final(self) -> Path:
        return self.root / "final"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"


def flatten(node: object, prefix: str = "") -> dict[str, object]:
    """A nested mapping as {"a.b.c": leaf}."""
    if isinstance(node, dict):
        out: dict[str, object] = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def changed_keys(old_yaml: str, new_yaml: str) -> list[str]:
    """Dotted keys whose values differ between two resolved configs, ignoring RESUMABLE_CHANGES."""
    old, new = flatten(yaml.safe_load(old_yaml) or {}), flatten(yaml.safe_load(new_yaml) or {})
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    return [k for k in keys if not k.startswith(RESUMABLE_CHANGES)]


def check_run_dir(run: RunDir, config_yaml: str, resume: bool) -> Path | None:
    """The checkpoint to resume from (None: start afresh), or a one-line error."""
    if run.root.is_file():
        raise UptrainError(f"--output {run.root} is a file; choose a directory")
    checkpoint = latest_checkpoint(run.checkpoints)
    if not resume:
        if checkpoint is not None or run.final.exists():
            what = checkpoint.name if checkpoint is not None else "final/"
            raise UptrainError(
                f"{run.root} already holds a run ({what}); "
                "pass --resume to continue it or choose another --output"
            )
        return None
    if run.config.is_file() and (checkpoint is not None or run.final.exists()):
        changed = changed_keys(run.config.read_text(), config_yaml)
        if changed:
            raise UptrainError(
                f"the config differs from the run in {run.root} ({', '.join(changed[:5])}); "
                "resume with the same config or choose another --output"
            )
    return checkpoint


def write_config(run: RunDir, config_yaml: str, source: str) -> None:
    run.root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.config, f"# resolved from {source}; every field, defaults included\n{config_yaml}")
