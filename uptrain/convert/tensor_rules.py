"""A translation's whole-tensor rules (rename, drop, zeros, fold, transpose), and a checkpoint seen
through them.

Only model_types with a `translate` section have rules; for every other one the view is the
checkpoint itself, name for name. What each rule does: uptrain/architectures/translation.py.
"""

from __future__ import annotations

import re

import torch

from uptrain.architectures.translation import Translation
from uptrain.checkpoint.shards import SourceCheckpoint, TensorMeta
from uptrain.errors import UptrainError


def template_pattern(template: str) -> re.Pattern[str]:
    """A tensor name template with `{layer}` as a regular expression matching any layer index
    (captured as the group `layer`)."""
    return re.compile("^" + re.escape(template).replace(re.escape("{layer}"), r"(?P<layer>\d+)") + "$")


def _fill(template: str, match: re.Match[str]) -> str:
    return template.format(layer=match.group("layer")) if "{layer}" in template else template


class TensorRules:
    def __init__(self, translation: Translation | None) -> None:
        t = translation
        self._renames = [(re.compile(r.pattern), r.replace) for r in t.rename] if t else []
        self._drop = [template_pattern(d) for d in t.drop] if t else []
        self._transpose = [template_pattern(d) for d in t.transpose] if t else []
        # the tensor whose first dim sizes a zero bias, and that bias
        self.zeros = [(template_pattern(z.rows_of), z.tensor) for z in t.zeros] if t else []
        self.folds = t.fold if t else ()
        # a linear layer's weight or bias -> the norm folded into it; a reset norm's tensor -> itself
        self._folded = [(template_pattern(f"{into}.{part}"), f.norm) for f in self.folds for into in f.into
                        for part in ("weight", "bias")]  # fmt: skip
        self._reset = [
            template_pattern(f"{f.norm}.{part}") for f in self.folds if f.reset for part in ("weight", "bias")
        ]

    def rename(self, name: str) -> str:
        """The name a source tensor has in the output (before `drop`)."""
        for pattern, replace in self._renames:
            if pattern.search(name):
                return pattern.sub(replace, name, count=1)
        return name

    def dropped(self, name: str) -> bool:
        return any(p.match(name) for p in self._drop)

    def transposes(self, name: str) -> bool:
        return any(p.match(name) for p in self._transpose)

    def folded_norm(self, name: str) -> str | None:
        """The norm folded into this linear weight or bias (a renamed name), if any."""
        for pattern, norm in self._folded:
            match = pattern.match(name)
            if match:
                return _fill(norm, match)
        return None

    def resets(self, name: str) -> bool:
        return any(p.match(name) for p in self._reset)


class RuledSource:
    """A SourceCheckpoint under TensorRules: renamed names, dropped tensors gone, absent biases as
    zeros, norms folded into the layers they feed, transposes applied. Reads stay lazy, a tensor
    (and what it is folded from) at a time; folded tensors come back in float32."""

    def __init__(self, source: SourceCheckpoint, rules: TensorRules) -> None:
        self.source = source
        self.rules = rules
        self._real: dict[str, str] = {}  # renamed -> source name, dropped ones included
        for real in source.names():
            name = rules.rename(real)
            if name in self._real:
                raise UptrainError(f"tensors {self._real[name]} and {real} would both become {name}")
            self._real[name] = real
        self._zeros: dict[str, str] = {}  # an added zero bias -> the tensor that sizes it
        for pattern, tensor in rules.zeros:
            for name in self._real:
                match = pattern.match(name)
                bias = match and _fill(tensor, match)
                if bias and bias not in self._real:
                    self._zeros[bias] = name
        self._names = [n for n in [*self._real, *self._zeros] if not rules.dropped(n)]
        self._shard_index = {id(s): i for i, s in enumerate(source.shards)}

    def names(self) -> list[str]:
        return list(self._names)

    def _home(self, name: str) -> str:
        return self._real[self._zeros.get(name, name)]

    def shard_index(self, name: str) -> int:
        return self._shard_index[id(self.source.shard_of(self._home(name)))]

    def meta(self, name: str) -> TensorMeta:
        if name in self._zeros:
            weight = self.source.meta(self._real[self._zeros[name]])
            return TensorMeta(weight.dtype, (weight.shape[0],))
        meta = self.source.meta(self._real[name])
        if not self.rules.transposes(name):
            return meta
        if len(meta.shape) != 2:
            raise UptrainError(
                f"tensor {self._real[name]} of shape {meta.shape} is not a matrix to transpose"
            )
        return TensorMeta(meta.dtype, meta.shape[::-1])

    def _raw(self, name: str) -> torch.Tensor:
        """A tensor after rename, zeros and transpose, before folding."""
        if name in self._zeros:
            weight = self.meta(self._zeros[name])
            return torch.zeros(weight.shape[0], dtype=weight.dtype)
        if name not in self._real:
            raise UptrainError(f"the checkpoint has no tensor {name} that its translation needs")
        tensor = self.source.load(self._real[name])
        return tensor.T.contiguous() if self.rules.transposes(name) else tensor

    def load(self, name: str) -> torch.Tensor:
        if self.rules.resets(name):  # a norm whose scale and shift went into the layers it feeds
            like = self.meta(name)
            fill = torch.ones if name.endswith(".weight") else torch.zeros
            return fill(like.shape, dtype=like.dtype)
        norm = self.rules.folded_norm(name)
        if norm is None:
            return self._raw(name)
        scale = self._raw(f"{norm}.weight").to(torch.float32)
        if name.endswith(".weight"):  # W diag(g)
            return self._raw(name).to(torch.float32) * scale
        weight = self._raw(name.removesuffix(".bias") + ".weight").to(torch.float32)
        shift = self._raw(f"{norm}.bias").to(torch.float32)
        return self._raw(name).to(torch.float32) + weight @ shift  # c + W b
