"""A translation's whole-tensor rules (rename, drop, transpose), and a checkpoint seen through them.

Only model_types with a `translate` section have rules; for every other one the view is the
checkpoint itself, name for name.
"""

from __future__ import annotations

import re

import torch

from uptrain.architectures.spec import Translation
from uptrain.checkpoint.shards import SourceCheckpoint, TensorMeta
from uptrain.errors import UptrainError


def template_pattern(template: str) -> re.Pattern[str]:
    """A tensor name template with `{layer}` as a regular expression matching any layer index."""
    return re.compile("^" + re.escape(template).replace(re.escape("{layer}"), r"\d+") + "$")


class TensorRules:
    def __init__(self, translation: Translation | None) -> None:
        t = translation
        self._renames = [(re.compile(r.pattern), r.replace) for r in t.rename] if t else []
        self._drop = [template_pattern(d) for d in t.drop] if t else []
        self._transpose = [template_pattern(d) for d in t.transpose] if t else []

    def rename(self, name: str) -> str | None:
        """The name a source tensor has in the output, or None when it is dropped."""
        for pattern, replace in self._renames:
            if pattern.search(name):
                name = pattern.sub(replace, name, count=1)
                break
        return None if any(p.match(name) for p in self._drop) else name

    def transposes(self, name: str) -> bool:
        return any(p.match(name) for p in self._transpose)


class RuledSource:
    """A SourceCheckpoint under TensorRules: renamed names, dropped tensors gone, transposes applied.
    Reads stay lazy, one tensor at a time."""

    def __init__(self, source: SourceCheckpoint, rules: TensorRules) -> None:
        self.source = source
        self.rules = rules
        self._real: dict[str, str] = {}
        for real in source.names():
            name = rules.rename(real)
            if name is None:
                continue
            if name in self._real:
                raise UptrainError(f"tensors {self._real[name]} and {real} would both become {name}")
            self._real[name] = real
        self._shard_index = {id(s): i for i, s in enumerate(source.shards)}

    def names(self) -> list[str]:
        return list(self._real)

    def shard_index(self, name: str) -> int:
        return self._shard_index[id(self.source.shard_of(self._real[name]))]

    def meta(self, name: str) -> TensorMeta:
        meta = self.source.meta(self._real[name])
        if not self.rules.transposes(name):
            return meta
        if len(meta.shape) != 2:
            raise UptrainError(
                f"tensor {self._real[name]} of shape {meta.shape} is not a matrix to transpose"
            )
        return TensorMeta(meta.dtype, meta.shape[::-1])

    def load(self, name: str) -> torch.Tensor:
        tensor = self.source.load(self._real[name])
        return tensor.T.contiguous() if self.rules.transposes(name) else tensor
