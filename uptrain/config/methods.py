"""Conversion method steps, declared once: each step names itself, says whether it calibrates and
whether it refines, and declares its options with their defaults and documentation (as
llm-compressor's modifiers do). STEPS is the registry from a name to its step; `compose` builds a
`--method` spec from it:

    [similar+] (mean | first | random | aligned | fit) [+refine]

`similar` alone means similar+mean; `refine` alone means fit+refine (refinement starts from the best
closed form). Steps run in that order whatever order they are written in; the canonical name (e.g.
"similar+fit+refine") is what uptrain.json records.

A step's option `f` is set by ConvertSection's field `prefix + f` (refine's `lr` by `refine_lr`),
which takes its default and documentation from here (`MethodStep.option`). The arithmetic of each step
lives in uptrain.convert.methods, looked up by the step's name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from uptrain.config.schema import setting
from uptrain.errors import SettingError

GROUPING, MERGE, REFINEMENT = "grouping", "merge", "refinement"  # the order steps run in
ROLES = (GROUPING, MERGE, REFINEMENT)


@dataclass(frozen=True)
class MethodStep:
    """One step of a conversion method; its dataclass fields are its options."""

    name: ClassVar[str]
    role: ClassVar[str]
    description: ClassVar[str]
    calibrates: ClassVar[bool] = False  # needs the calibration pass over the source
    refines: ClassVar[bool] = False  # trains the converted layer against the source's
    prefix: ClassVar[str] = ""  # how ConvertSection and uptrain.json name this step's options

    def check(self) -> None:
        """The step's options, checked before anything is read (one-line SettingError)."""

    def options(self) -> dict[str, Any]:
        """The options as uptrain.json records them."""
        return {self.prefix + f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def option(cls, name: str) -> Any:
        """The ConvertSection field for option `name`: its default, documentation and cli spelling."""
        (field,) = [f for f in dataclasses.fields(cls) if f.name == name]
        doc = f"Method {cls.name}: {field.metadata['doc']}"
        return setting(field.default, doc, cli=field.metadata["cli"] or None)

    @classmethod
    def from_settings(cls, settings: Any) -> MethodStep:
        """The step with the options `settings` (a ConvertSection, or None: the defaults) sets."""
        names = [f.name for f in dataclasses.fields(cls)]
        given = {n: getattr(settings, cls.prefix + n) for n in names if hasattr(settings, cls.prefix + n)}
        return cls(**given)


@dataclass(frozen=True)
class Similar(MethodStep):
    name = "similar"
    role = GROUPING
    description = "choose each group's heads by calibrated similarity (permutes heads)"
    calibrates = True
    merges: ClassVar[tuple[str, ...]] = ("mean", "aligned", "fit")  # the merges it groups heads for


@dataclass(frozen=True)
class Mean(MethodStep):
    name = "mean"
    role = MERGE
    description = "mean-pool each group's K/V heads (the GQA paper's default)"


@dataclass(frozen=True)
class First(MethodStep):
    name = "first"
    role = MERGE
    description = "keep the first K/V head of each group"


@dataclass(frozen=True)
class Random(MethodStep):
    name = "random"
    role = MERGE
    description = "fresh K/V heads from N(0, initializer_range), seeded"


@dataclass(frozen=True)
class Aligned(MethodStep):
    name = "aligned"
    role = MERGE
    description = "align heads by RoPE-commuting rotations, then mean-pool (Jin et al. 2024)"
    calibrates = True


@dataclass(frozen=True)
class Fit(MethodStep):
    name = "fit"
    role = MERGE
    description = "closed-form calibration- and query-weighted shared K/V, folded into Q/O"
    calibrates = True
    query_aware: bool = setting(True, "weight key errors by the energy of the queries that read them.")
    output_aware: bool = setting(True, "weight value errors by o_proj.")
    mixed_values: bool = setting(True, "measure value errors on the inputs as attention mixes them.")


REFINE_PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class Refine(MethodStep):
    name = "refine"
    role = REFINEMENT
    description = "then train each layer's attention to match the source's output"
    calibrates = True
    refines = True
    prefix = "refine_"
    merge_alone: ClassVar[str] = "fit"  # the merge refine starts from when the spec names none
    steps: int = setting(100, "optimizer steps per layer (one replay batch each).")
    lr: float = setting(3e-3, "Adam learning rate (cosine decay).")
    tokens: int = setting(4096, "calibration tokens replayed per layer.")
    batch_tokens: int = setting(
        512, "replayed tokens per step (whole sequences; the batches are taken in turn)."
    )
    precision: Literal["auto", "fp32", "bf16"] = setting(
        "auto",
        "bf16 autocast of the replayed layer (weights stay fp32); auto: bf16 where the CPU has AMX (Intel "
        "Xeon 4th generation and later, ~1.5x faster there) and torch may use it, else fp32.",
    )
    output: bool = setting(
        False,
        "after fit, train o_proj too (by default it keeps fit's fold, which generalized better on "
        "SmolLM2, see docs/RESULTS.md); after other merges refine always trains it.",
        cli={"negatable": True},
    )

    def check(self) -> None:
        if self.precision not in REFINE_PRECISIONS:
            choices = ", ".join(REFINE_PRECISIONS)
            raise SettingError(f"<refine_precision> {self.precision!r} is not one of {choices}")
        if self.steps < 0 or self.lr <= 0:
            raise SettingError("<refine_steps> must be 0 or more and <refine_lr> more than 0")
        if self.tokens < 1 or self.batch_tokens < 1:
            raise SettingError("<refine_tokens> and <refine_batch_tokens> must be at least 1")


STEPS: dict[str, type[MethodStep]] = {s.name: s for s in (Similar, Mean, First, Random, Aligned, Fit, Refine)}
DEFAULT_MERGE = "mean"


@dataclass(frozen=True)
class ComposedMethod:
    """A `--method` spec as its steps, in the order they run, each with its options."""

    steps: tuple[MethodStep, ...]

    @property
    def name(self) -> str:
        return "+".join(s.name for s in self.steps)

    @property
    def calibrates(self) -> bool:
        return any(s.calibrates for s in self.steps)

    @property
    def refines(self) -> bool:
        return any(s.refines for s in self.steps)

    @property
    def merge(self) -> MethodStep:
        return next(s for s in self.steps if s.role == MERGE)

    def find(self, kind: type[MethodStep]) -> Any:
        """The step of class `kind` (typed as it: `method.find(Refine).lr`), or None."""
        return next((s for s in self.steps if isinstance(s, kind)), None)

    def replace(self, step: MethodStep) -> ComposedMethod:
        """This method with `step` instead of the step of its class (e.g. an option resolved)."""
        return ComposedMethod(tuple(step if type(s) is type(step) else s for s in self.steps))

    def check(self) -> None:
        for step in self.steps:
            step.check()

    def options(self) -> dict[str, Any]:
        """Every step's options, as uptrain.json's method_options records them."""
        return {k: v for s in self.steps for k, v in s.options().items()}


def _invalid(spec: str) -> SettingError:
    return SettingError(
        f"<method> {spec!r} is not valid; use [similar+](mean|first|random|aligned|fit)[+refine], "
        f"e.g. similar+fit+refine"
    )


def compose(spec: str, settings: Any = None) -> ComposedMethod:
    """The method `spec` names, built from STEPS with the options `settings` (a ConvertSection) sets."""
    names = [s.strip() for s in spec.split("+")]
    if any(n not in STEPS for n in names) or len(set(names)) != len(names):
        raise _invalid(spec)
    kinds = [STEPS[n] for n in names]
    merges = [k.name for k in kinds if k.role == MERGE]
    if len(merges) > 1:
        raise SettingError(f"<method> {spec!r} names {' and '.join(merges)}; choose one merge step")
    if not merges:
        implied = [k.merge_alone for k in kinds if hasattr(k, "merge_alone")]
        kinds.append(STEPS[implied[0] if implied else DEFAULT_MERGE])
    merge = next(k.name for k in kinds if k.role == MERGE)
    for kind in kinds:
        if hasattr(kind, "merges") and merge not in kind.merges:
            raise SettingError(
                f"<method>: {kind.name} groups heads for {', '.join(kind.merges[:-1])} or {kind.merges[-1]}, "
                f"not {merge}; drop one of them"
            )
    kinds.sort(key=lambda k: ROLES.index(k.role))
    return ComposedMethod(tuple(k.from_settings(settings) for k in kinds))
