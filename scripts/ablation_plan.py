"""What scripts/ablations.py trains and evaluates: the checkpoints of each experiment, and the recipe.

A Model names one checkpoint: the MHA reference, a conversion (G groups, a method), or a conversion
uptrained on a fraction of the reference's pre-training tokens, with cross-entropy or distillation.
Experiments share checkpoints (the mean-pooled GQA uptrained on 5% appears in all four), so the plan
lists each one once.
"""

from __future__ import annotations

from dataclasses import dataclass

FRACTIONS = (0.0, 0.01, 0.025, 0.05, 0.10)
TINY_FRACTIONS = (0.0, 0.25)
DISTILL_WEIGHTS = (0.5, 1.0)
MAIN_FRACTION = 0.05
UPTRAIN_LR = 1e-3  # a third of the reference's peak (3e-3); experiment "lr" checks the choice
OTHER_LRS = (3e-4, 3e-3)
UPTRAIN_SEED = 1  # the data order differs from pre-training's (seed 0)
SECOND_SEED = 2  # experiment methods repeats its uptraining with this data order


@dataclass(frozen=True)
class Model:
    """One checkpoint of the study: the reference (groups None), a conversion (fraction 0), or an
    uptrained conversion."""

    groups: int | None = None
    method: str = "mean"
    fraction: float = 0.0
    distill: float = 0.0  # distill.weight; 0 is plain cross-entropy
    lr: float = UPTRAIN_LR  # peak learning rate of uptraining
    seed: int = UPTRAIN_SEED  # train.seed: the order of the uptraining data

    @property
    def name(self) -> str:
        if self.groups is None:
            return "reference"
        name = f"g{self.groups}-{self.method}"
        if self.fraction:
            name += f"-{self.fraction * 100:g}pct"
        if self.distill:
            name += f"-kd{self.distill:g}"
        if self.fraction and self.lr != UPTRAIN_LR:
            name += f"-lr{self.lr:g}"
        if self.fraction and self.seed != UPTRAIN_SEED:
            name += f"-seed{self.seed}"
        return name

    @property
    def conversion(self) -> Model:
        return Model(self.groups, self.method)


@dataclass(frozen=True)
class Plan:
    heads: int  # H, the reference's query (and KV) heads
    main: float  # the uptraining fraction of experiments methods, groups and objective
    experiments: dict[str, list[Model]]  # methods, fractions, groups, objective, lr

    @property
    def models(self) -> list[Model]:
        """Every checkpoint, each once, in the order the experiments need them."""
        seen: dict[str, Model] = {}
        for models in self.experiments.values():
            for model in models:
                seen.setdefault(model.name, model)
        return list(seen.values())


def divisors(n: int) -> list[int]:
    return [g for g in range(1, n + 1) if n % g == 0]


def make_plan(heads: int, tiny: bool = False) -> Plan:
    gqa = max(1, heads // 4)
    variants = sorted({gqa, 1}, reverse=True)
    main = TINY_FRACTIONS[-1] if tiny else MAIN_FRACTION
    methods = ("mean", "random") if tiny else ("mean", "first", "random")
    fractions = TINY_FRACTIONS if tiny else FRACTIONS
    weights = DISTILL_WEIGHTS[-1:] if tiny else DISTILL_WEIGHTS
    lrs = sorted((UPTRAIN_LR, *(OTHER_LRS[-1:] if tiny else OTHER_LRS)))
    seeds = (UPTRAIN_SEED, SECOND_SEED)
    ref = Model()
    return Plan(
        heads,
        main,
        {
            "methods": [ref]
            + [Model(g, m) for g in variants for m in methods]
            + [Model(g, m, main, seed=s) for s in seeds for g in variants for m in methods],
            "fractions": [ref] + [Model(g, "mean", f) for g in variants for f in fractions],
            "groups": [ref] + [Model(g, "mean", f) for g in divisors(heads) for f in (0.0, main)],
            "objective": [ref] + [Model(g, "mean", main, w) for g in variants for w in (0.0, *weights)],
            "lr": [ref] + [Model(1, "mean", main, lr=lr) for lr in lrs],
        },
    )
