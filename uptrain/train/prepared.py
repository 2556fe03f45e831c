"""What `train()` receives: a prepared model directory and what is known about it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class PreparedModel:
    path: Path  # checkpoint directory to uptrain (converted, built or given)
    record: dict[str, Any]  # its uptrain.json (the provenance chain)
    teacher: str | None  # the model it came from, the default distillation teacher
    from_scratch: bool = False  # a random initialisation: this training is its pre-training
