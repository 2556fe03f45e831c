"""Reading a checkpoint's weights lazily, one tensor at a time, whatever shards hold them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from safetensors import SafetensorError, safe_open

from uptrain.checkpoint.dtypes import SAFETENSORS_DTYPES
from uptrain.errors import UptrainError


@dataclass(frozen=True)
class TensorMeta:
    dtype: torch.dtype
    shape: tuple[int, ...]


class WeightShard(Protocol):
    """One file (or in-memory dict) of weights."""

    label: str

    def names(self) -> list[str]: ...

    def meta(self, name: str) -> TensorMeta: ...

    def load(self, name: str) -> torch.Tensor: ...


class SafetensorsShard:
    """A .safetensors file. Each load maps the file only for that tensor, so resident memory
    stays near one tensor however large the shard is."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.label = path.name
        if not path.is_file():
            raise UptrainError(f"weights file {path} is missing; re-download the checkpoint")
        try:
            with safe_open(str(path), framework="pt") as f:
                self._meta = {}
                for name in f.keys():  # noqa: SIM118 - safe_open is not a dict
                    sl = f.get_slice(name)
                    self._meta[name] = TensorMeta(SAFETENSORS_DTYPES[sl.get_dtype()], tuple(sl.get_shape()))
        except (SafetensorError, OSError, KeyError) as exc:
            raise UptrainError(
                f"{path} is not a valid safetensors file ({exc}); it is truncated or corrupt, re-download it"
            ) from None

    def names(self) -> list[str]:
        return list(self._meta)

    def meta(self, name: str) -> TensorMeta:
        return self._meta[name]

    def load(self, name: str) -> torch.Tensor:
        try:
            with safe_open(str(self.path), framework="pt") as f:
                return f.get_tensor(name)
        except (SafetensorError, OSError) as exc:
            raise UptrainError(f"cannot read {name} from {self.path} ({exc}); re-download the file") from None


class MemoryShard:
    """Weights already in memory (a GGUF file dequantized by transformers, for instance)."""

    def __init__(self, tensors: dict[str, torch.Tensor], label: str = "memory") -> None:
        self._tensors = tensors
        self.label = label

    def names(self) -> list[str]:
        return list(self._tensors)

    def meta(self, name: str) -> TensorMeta:
        t = self._tensors[name]
        return TensorMeta(t.dtype, tuple(t.shape))

    def load(self, name: str) -> torch.Tensor:
        return self._tensors[name]


class PickleShard(MemoryShard):
    """A pytorch_model*.bin file, read only when the user passed --allow-pickle, and then with
    torch.load(weights_only=True), which refuses arbitrary objects; memory-mapped, then served as
    a MemoryShard."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            tensors = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # noqa: BLE001 - torch raises many kinds here
            raise UptrainError(f"cannot read pickled weights {path} ({exc}); re-download the file") from None
        super().__init__(tensors, label=path.name)


@dataclass
class SourceCheckpoint:
    """A checkpoint's config and weight shards, and where it came from."""

    config: dict
    shards: list[WeightShard]
    root: Path | None = None  # directory holding tokenizer and other files to copy, if any
    provenance: dict = field(default_factory=dict)
    load_path: Path | None = None  # what AutoModelForCausalLM.from_pretrained loads (default: root)
    gguf_file: str | None = None  # with load_path: the GGUF file transformers dequantizes
    _where: dict[str, WeightShard] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for shard in self.shards:
            for name in shard.names():
                if name in self._where:
                    raise UptrainError(
                        f"tensor {name} appears in two weight files; the checkpoint is inconsistent"
                    )
                self._where[name] = shard

    def names(self) -> list[str]:
        return list(self._where)

    @property
    def model_path(self) -> Path | None:
        return self.load_path or self.root

    def shard_of(self, name: str) -> WeightShard:
        return self._where[name]

    def meta(self, name: str) -> TensorMeta:
        return self._where[name].meta(name)

    def load(self, name: str) -> torch.Tensor:
        return self._where[name].load(name)


def _safe_file_name(name: str, index: Path) -> str:
    if (
        not isinstance(name, str)
        or "/" in name
        or "\\" in name
        or name in ("", ".", "..")
        or name.startswith(".")
    ):
        raise UptrainError(
            f"{index} names the weight file {name!r}, which is not a plain file name; refusing it"
        )
    return name


def _read_index(index: Path) -> dict[str, str]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not a mapping")
    except (ValueError, KeyError, TypeError) as exc:
        raise UptrainError(f"{index} is not a valid weight index ({exc}); re-download it") from None
    return {tensor: _safe_file_name(file, index) for tensor, file in weight_map.items()}


def _shards_from_index(root: Path, index: Path, shard_type: type) -> list[WeightShard]:
    weight_map = _read_index(index)
    files = sorted(set(weight_map.values()))
    for file in files:
        if not (root / file).is_file():
            raise UptrainError(
                f"{index.name} names the shard {file}, which is missing from {root}; re-download it"
            )
    shards = [shard_type(root / file) for file in files]
    for shard in shards:
        for name in shard.names():
            if weight_map.get(name) != shard.label:
                raise UptrainError(
                    f"{shard.label} holds {name}, which {index.name} does not map to it; re-download"
                )
    listed = sum(len(s.names()) for s in shards)
    if listed != len(weight_map):
        raise UptrainError(
            f"{index.name} lists tensors that its shards do not hold; re-download the checkpoint"
        )
    return shards


def find_weight_shards(root: Path, allow_pickle: bool = False) -> list[WeightShard]:
    """The weight files of a checkpoint directory: safetensors (single or sharded), or, only when
    allowed, pickled PyTorch .bin files."""
    if (root / "model.safetensors.index.json").is_file():
        return _shards_from_index(root, root / "model.safetensors.index.json", SafetensorsShard)
    if (root / "model.safetensors").is_file():
        return [SafetensorsShard(root / "model.safetensors")]
    singles = sorted(root.glob("*.safetensors"))
    if len(singles) == 1:
        return [SafetensorsShard(singles[0])]
    pickled = (root / "pytorch_model.bin.index.json").is_file() or (root / "pytorch_model.bin").is_file()
    if pickled and not allow_pickle:
        raise UptrainError(
            f"{root} has only pickled .bin weights, which can run arbitrary code when loaded; "
            "convert them to safetensors, or pass --allow-pickle if you trust the source"
        )
    if (root / "pytorch_model.bin.index.json").is_file():
        return _shards_from_index(root, root / "pytorch_model.bin.index.json", PickleShard)
    if (root / "pytorch_model.bin").is_file():
        return [PickleShard(root / "pytorch_model.bin")]
    raise UptrainError(
        f"no weights in {root}: expected model.safetensors or model.safetensors.index.json with its shards"
    )
