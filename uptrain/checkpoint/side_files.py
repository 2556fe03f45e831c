"""Side files: the tokenizer, generation config and other non-weight files that go from SRC to OUT."""

from __future__ import annotations

import shutil
from pathlib import Path

from uptrain.errors import UptrainError

# Never copied from SRC to OUT: weights and their indexes (rewritten), the source's model card
# (it describes another model), provenance (rewritten) and Python code (the output is a model that
# transformers loads natively; see converted_config).
_NOT_COPIED_SUFFIXES = (
    ".py",
    ".pyc",
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".gguf",
    ".h5",
    ".msgpack",
    ".ckpt",
    ".index.json",
)
_NOT_COPIED_NAMES = {"config.json", "uptrain.json", "README.md", ".gitattributes"}


def _check_link(entry: Path, root: Path) -> None:
    """A side file that is a link must point into SRC (or, for a Hub snapshot, into its cache's blobs):
    a link elsewhere would copy an unrelated file -- a key, a credential -- into OUT, and push uploads it."""
    if not entry.is_symlink():
        return
    target, home = entry.resolve(), root.resolve()
    allowed = [home]
    if root.parent.name == "snapshots":  # huggingface_hub's cache: snapshots/<commit>/x -> ../../blobs/<sha>
        allowed.append(root.parent.parent.resolve() / "blobs")
    if not any(target == a or a in target.parents for a in allowed):
        raise UptrainError(
            f"{entry} is a link to {target}, outside the source directory; copy the file itself into SRC"
        )


def side_files(root: Path | None) -> list[Path]:
    """The tokenizer, generation config and other top-level non-weight files of SRC that go to OUT:
    plain names from SRC's own listing, and links only to files inside SRC."""
    if root is None:
        return []
    found = []
    for entry in sorted(root.iterdir()):
        if not entry.is_file() or entry.name.startswith(".") or entry.name in _NOT_COPIED_NAMES:
            continue
        if entry.name.endswith(_NOT_COPIED_SUFFIXES):
            continue
        _check_link(entry, root)
        found.append(entry)
    return found


def copy_side_files(root: Path | None, dest: Path) -> list[str]:
    """Copy side_files(root) into dest."""
    copied = []
    for entry in side_files(root):
        shutil.copy2(entry, dest / entry.name)
        copied.append(entry.name)
    return copied


def write_generation_config(dest: Path, config: dict) -> None:
    """generation_config.json derived from config.json (its BOS, EOS and pad ids), as transformers'
    save_pretrained writes one, for an output whose source has none: serving engines read it."""
    from transformers import GenerationConfig

    GenerationConfig.from_model_config(dict(config)).save_pretrained(dest)
