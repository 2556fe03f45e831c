"""Shared pieces of the push tests: a checkpoint directory with junk beside it, and a local Hub."""

from __future__ import annotations

import json
import logging
import shutil
from contextlib import contextmanager
from pathlib import Path

FAKE_TOKEN = "hf_fakeUptrainToken7Qx9ZkW3mP2vL8nR4tY6"

# What push must upload, beside the weights the converter wrote: written by the fixture.
SIDE_FILES = {
    "tokenizer.json": b'{"version": "1.0", "model": {"type": "BPE"}}',
    "tokenizer_config.json": b'{"model_max_length": 128}',
    "special_tokens_map.json": b'{"eos_token": "</s>"}',
    "chat_template.jinja": b"{% for m in messages %}{{ m.content }}{% endfor %}",
}
# What push must leave home.
JUNK = {
    "optimizer.pt": b"\x80\x04 pickled optimizer",
    "scheduler.pt": b"\x80\x04 pickled scheduler",
    "rng_state.pth": b"\x80\x04 rng",
    "training_args.bin": b"\x80\x04 args",
    "pytorch_model.bin": b"\x80\x04 pickled weights",
    "metrics.jsonl": b'{"step": 1, "loss": 3.2}\n',
    "notes.txt": b"private notes",
    ".hidden.json": b"{}",
    "checkpoints/step-10/model.safetensors": b"not a real checkpoint",
    "checkpoints/step-10/optimizer.bin": b"\x80\x04 optimizer",
    "checkpoints/step-10/config.json": b"{}",
    "runs/events.out.tfevents": b"tensorboard",
}


def expected_upload(directory: Path) -> set[str]:
    """The names push must upload, listed independently of uptrain.hub.push."""
    weights = {p.name for p in directory.glob("*.safetensors")}
    fixed = {
        "config.json",
        "generation_config.json",
        "uptrain.json",
        "README.md",
        "model.safetensors.index.json",
    }
    return weights | fixed | set(SIDE_FILES)


def build_checkpoint(root: Path) -> Path:
    """A tiny Llama converted 8 -> 2 KV heads, in 3+ shards, plus tokenizer files and junk."""
    from tiny_models import build_tiny

    from uptrain.checkpoint.source import open_source
    from uptrain.config import ConvertSection
    from uptrain.convert.convert import convert_checkpoint

    src = build_tiny("llama", root / "mha-src", kv_heads=8, max_shard_size="40KB")
    out = root / "tiny-gqa"
    convert_checkpoint(open_source(src), out, ConvertSection(groups=2))
    for name, data in {**SIDE_FILES, **JUNK}.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    return out


def fresh_copy(template: Path, dest: Path) -> Path:
    shutil.copytree(template, dest)
    return dest


def add_training(directory: Path, **training) -> None:
    record = json.loads((directory / "uptrain.json").read_text())
    record["training"] = training
    (directory / "uptrain.json").write_text(json.dumps(record, indent=2))


class RecordCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name} {record.getMessage()} {record.exc_text or ''}")


@contextmanager
def all_logs():
    """Every log record of every logger at DEBUG, whatever pytest's logging plugin does."""
    collector = RecordCollector()
    root = logging.getLogger()
    touched = [root, logging.getLogger("huggingface_hub"), logging.getLogger("uptrain")]
    levels = [lg.level for lg in touched]
    root.addHandler(collector)
    for lg in touched:
        lg.setLevel(logging.DEBUG)
    try:
        yield collector
    finally:
        root.removeHandler(collector)
        for lg, level in zip(touched, levels, strict=True):
            lg.setLevel(level)
