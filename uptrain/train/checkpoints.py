"""Resumable checkpoints: accelerator.save_state plus the loop's own position, written whole or not at all.

A checkpoint is OUTPUT/checkpoints/step-00000012/: what accelerator.save_state writes (model,
optimizer, scheduler, RNG states, Accelerate's micro-step counter) and trainer_state.json (steps,
tokens, the data position), written last. Every process writes into the same temporary directory
`.step-00000012.tmp`, which the main process renames when all are done; a full disk or a kill
leaves the previous checkpoints as they were. Only the last `keep_last` are kept.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from uptrain.checkpoint.atomic import atomic_write_text, disk_error
from uptrain.errors import UptrainError

STATE_FILE = "trainer_state.json"
NEARLY_FULL = 1 << 20  # bytes free after a failed save below which the device counts as full
_NAME = re.compile(r"^step-(\d{8})$")


@dataclass
class TrainerState:
    step: int = 0  # optimizer steps done
    tokens: int = 0  # tokens trained on (all processes)
    micro_batches: int = 0  # micro-batches each process has consumed: the data position
    elapsed_s: float = 0.0  # training wall time before this process started
    last_loss: float | None = None
    source_blocks: list[int] | None = None  # data.mix: blocks trained on from each source (all processes)

    @classmethod
    def read(cls, directory: Path) -> TrainerState:
        return cls(**json.loads((directory / STATE_FILE).read_text()))

    def write(self, directory: Path) -> None:
        atomic_write_text(directory / STATE_FILE, json.dumps(asdict(self), indent=2) + "\n")


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under root, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        m = _NAME.match(entry.name)
        if m and (entry / STATE_FILE).is_file():
            found.append((int(m[1]), entry))
    return sorted(found)


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def remove_partial_checkpoints(root: Path) -> None:
    """What a killed save left behind: temporary directories (main process, before training)."""
    if root.is_dir():
        for entry in root.glob(".step-*.tmp"):
            shutil.rmtree(entry, ignore_errors=True)


class _TiedWeightsNote(logging.Filter):
    """accelerate's safetensors save drops the second name of tensors that share storage and warns
    that it did ("Removed shared tensor {'lm_head.weight'} while saving"). For tied input and output
    embeddings that is what loading expects (load_state ties them back), so the line only alarms."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Removed shared tensor" not in record.getMessage()


@contextlib.contextmanager
def _quiet_tied_weights() -> Iterator[None]:
    logger, note = logging.getLogger("accelerate.utils.other"), _TiedWeightsNote()
    logger.addFilter(note)
    try:
        yield
    finally:
        logger.removeFilter(note)


def save_checkpoint(accelerator: Any, root: Path, state: TrainerState, keep_last: int) -> Path:
    """Save the full training state as checkpoint `state.step`; all processes must call it."""
    final = root / checkpoint_name(state.step)
    if final.is_dir():  # e.g. an interrupt right after a periodic save
        return final
    tmp = root / f".{final.name}.tmp"
    previous = latest_checkpoint(root)
    failed: BaseException | None = None
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    try:
        with _quiet_tied_weights():
            accelerator.save_state(str(tmp))
        if accelerator.is_main_process:
            state.write(tmp)
    except Exception as exc:  # noqa: BLE001 - torch.save reports a full disk as a RuntimeError
        failed = exc
    accelerator.wait_for_everyone()
    if failed is not None:
        reason = _failure_reason(failed, root)
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
        raise UptrainError(
            f"could not write checkpoint {final.name} ({reason}); {kept}; free space and rerun with --resume"
        ) from failed
    if accelerator.is_main_process:
        tmp.rename(final)
        for _, old in list_checkpoints(root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _failure_reason(exc: BaseException, root: Path) -> str:
    """Why a save failed. torch.save hides ENOSPC in a RuntimeError ("unexpected pos ..."), so a device
    that is (nearly) full right after the failure counts as full too."""
    if isinstance(exc, OSError) and disk_error(exc, root) is not None:
        return "no space left on the device"
    try:
        free = shutil.disk_usage(root).free
    except OSError:
        free = None
    if free is not None and free < NEARLY_FULL:
        return f"no space left on the device ({free:,} bytes free)"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"


def load_checkpoint(accelerator: Any, directory: Path) -> TrainerState:
    """Restore everything save_checkpoint saved; return the loop's position."""
    accelerator.load_state(str(directory))
    return TrainerState.read(directory)
