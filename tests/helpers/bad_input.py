"""Pieces of the bad-input matrix (tests/cli/test_bad_input_matrix.py): the checkpoints every case reads,
and the check that a failed command left its work directory exactly as it found it."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

DELETE = object()


@dataclass(frozen=True)
class Inputs:
    """Read-only checkpoints shared by the cases, and each case's own empty work directory."""

    mha: Path  # tiny Llama, 8 heads = 8 KV heads, 320-token vocabulary, with its tokenizer
    gqa: Path  # mha converted to 2 KV heads by uptrain (uptrain.json, shards, index)
    small: Path  # tiny Llama with a 96-token vocabulary and no tokenizer
    pickled: Path  # mha's weights as pytorch_model.bin only
    text: Path  # a few hundred words
    work: Path

    @property
    def out(self) -> Path:
        return self.work / "out"

    @property
    def src(self) -> Path:
        """Where copy_of() puts a checkpoint that a case damages."""
        return self.work / "src"


def build_inputs(root: Path) -> dict[str, Path]:
    import torch
    from tiny_models import build_tiny
    from tiny_tokenizer import SENTENCES, add_tokenizer

    from uptrain.checkpoint.source import open_source
    from uptrain.config import ConvertSection
    from uptrain.convert.convert import convert_checkpoint

    mha = build_tiny("llama", root / "mha", kv_heads=8, vocab_size=320, max_shard_size="60KB")
    add_tokenizer(mha)
    gqa = root / "gqa"
    convert_checkpoint(open_source(mha), gqa, ConvertSection(groups=2))
    small = build_tiny("llama", root / "small", kv_heads=8)
    pickled = root / "pickled"
    shutil.copytree(mha, pickled)
    state = {}
    for shard in sorted(pickled.glob("*.safetensors")):
        from safetensors.torch import load_file

        state.update(load_file(shard))
        shard.unlink()
    (pickled / "model.safetensors.index.json").unlink()
    torch.save(state, pickled / "pytorch_model.bin")
    text = root / "text.txt"
    text.write_text(" ".join(SENTENCES * 8))
    return {"mha": mha, "gqa": gqa, "small": small, "pickled": pickled, "text": text}


def copy_of(which: str):
    """prepare(): copy a shared checkpoint to inputs.src, to be damaged there."""

    def prepare(p: Inputs) -> None:
        shutil.copytree(getattr(p, which), p.src)

    return prepare


def then(*steps):
    def prepare(p: Inputs) -> None:
        for step in steps:
            step(p)

    return prepare


def edit_json(name: str, **changes):
    """prepare() step: change keys of src/NAME (DELETE removes one)."""

    def step(p: Inputs) -> None:
        path = p.src / name
        data = json.loads(path.read_text())
        for key, value in changes.items():
            if value is DELETE:
                data.pop(key, None)
            else:
                data[key] = value
        path.write_text(json.dumps(data))

    return step


def write(name: str, content: str | bytes, under: str = "src"):
    """prepare() step: write a file under src/ (or the work directory with under="")."""

    def step(p: Inputs) -> None:
        path = (p.work / under / name) if under else p.work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)

    return step


def add_to_index(tensor: str):
    """prepare() step: the index of src/ maps one more tensor, which no shard holds, to the first shard."""

    def step(p: Inputs) -> None:
        path = p.src / "model.safetensors.index.json"
        index = json.loads(path.read_text())
        index["weight_map"][tensor] = first_shard(p).name
        path.write_text(json.dumps(index))

    return step


def truncate_first_shard(p: Inputs) -> None:
    shard = first_shard(p)
    shard.write_bytes(shard.read_bytes()[:100])


def first_shard(p: Inputs) -> Path:
    return sorted(p.src.glob("model-*.safetensors"))[0]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and directory under root with its size and modification time."""
    found = {}
    for path in sorted(root.rglob("*")):
        stat = path.lstat()
        found[str(path.relative_to(root))] = (0 if path.is_dir() else stat.st_size, stat.st_mtime_ns)
    return found


def left_behind(before: dict, after: dict) -> list[str]:
    """What a command added, removed or changed under its work directory."""
    changed = {k for k in before.keys() & after.keys() if before[k] != after[k]}
    return sorted((after.keys() - before.keys()) | (before.keys() - after.keys()) | changed)
