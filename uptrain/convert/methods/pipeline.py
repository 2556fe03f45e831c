"""`--method` specs: one merge step, optionally preceded by grouping and followed by refinement.

    [similar+] (mean | first | random | aligned | fit) [+refine]

`similar` alone means similar+mean; `refine` alone means fit+refine (refinement starts from the
best closed form). Steps run in that order whatever order they are written in; the canonical
name (e.g. "similar+fit+refine") is what uptrain.json records.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Any

from uptrain.architectures import AttentionWeights
from uptrain.convert.methods.aligned import aligned_layer
from uptrain.convert.methods.base import ConversionMethod, LayerFn, MethodContext
from uptrain.convert.methods.basic import FIRST, MEAN, RANDOM
from uptrain.convert.methods.fit import fit_layer
from uptrain.convert.methods.metric import calibrated_setup
from uptrain.convert.methods.objective import layer_error
from uptrain.convert.methods.refine import refine_attention
from uptrain.convert.methods.similar import similar_grouping
from uptrain.errors import SettingError

GROUPING = {"similar": "choose each group's heads by calibrated similarity (permutes heads)"}
MERGES = {
    MEAN.name: MEAN.description,
    FIRST.name: FIRST.description,
    RANDOM.name: RANDOM.description,
    "aligned": "align heads by RoPE-commuting rotations, then mean-pool (Jin et al. 2024)",
    "fit": "closed-form calibration- and query-weighted shared K/V, folded into Q/O",
}
REFINEMENT = {"refine": "then train each layer's attention to match the source's output"}
CALIBRATED = {"similar", "aligned", "fit", "refine"}
STEPS = {**GROUPING, **MERGES, **REFINEMENT}


@dataclass(frozen=True)
class MethodOptions:
    refine_steps: int = 100
    refine_lr: float = 3e-3
    refine_tokens: int = 4096  # calibration tokens whose attention inputs refine replays
    refine_batch_tokens: int = 512  # of those, per step (the calibration pass batches them so)
    refine_precision: str = "fp32"  # fp32 or bf16 (autocast), resolved from the setting's auto
    refine_output: bool = False  # refine after fit: train o_proj too (other merges always train it)
    query_aware: bool = True  # fit: weight key errors by the energy of the queries that read them
    output_aware: bool = True  # fit: weight value errors by o_proj
    mixed_values: bool = True  # fit: measure value errors on the inputs as attention mixes them

    def record(self, steps: list[str]) -> dict[str, Any]:
        values = asdict(self)
        refine = {"refine_steps", "refine_lr", "refine_tokens", "refine_batch_tokens", "refine_precision"}
        keep = refine | {"refine_output"} if "refine" in steps else set()
        keep |= {"query_aware", "output_aware", "mixed_values"} if "fit" in steps else set()
        return {k: v for k, v in values.items() if k in keep}


def parse_method(spec: str) -> list[str]:
    """The steps of a method spec, completed and in order: [grouping], merge, [refine]."""
    steps = [s.strip() for s in spec.split("+")]
    unknown = [s for s in steps if s not in STEPS]
    if unknown or len(set(steps)) != len(steps):
        raise SettingError(
            f"<method> {spec!r} is not valid; use [similar+](mean|first|random|aligned|fit)[+refine], "
            f"e.g. similar+fit+refine"
        )
    merges = [s for s in steps if s in MERGES]
    if len(merges) > 1:
        raise SettingError(f"<method> {spec!r} names {' and '.join(merges)}; choose one merge step")
    if not merges:
        merges = ["fit" if "refine" in steps else "mean"]
    if "similar" in steps and merges[0] in ("first", "random"):
        raise SettingError(
            f"<method>: similar groups heads for mean, aligned or fit, not {merges[0]}; drop one of them"
        )
    return [s for s in GROUPING if s in steps] + merges + [s for s in REFINEMENT if s in steps]


def _merge_fn(name: str, options: MethodOptions) -> LayerFn:
    basic = {MEAN.name: MEAN, FIRST.name: FIRST, RANDOM.name: RANDOM}
    if name in basic:
        return basic[name].convert_layer
    if name == "aligned":
        return aligned_layer
    return functools.partial(
        fit_layer,
        query_aware=options.query_aware,
        output_aware=options.output_aware,
        mixed_values=options.mixed_values,
    )


def _note_error(source: AttentionWeights, new: AttentionWeights, ctx: MethodContext) -> None:
    """Record the calibrated score and value errors of the merge, where they are defined."""
    cal = ctx.calibration
    if ctx.report is None or cal is None or cal.keys_normalized or source.kv_extras:
        return
    setup = calibrated_setup(source, ctx, "report")
    key, value = layer_error(source, new, setup.metric, setup.pairs, setup.mixed).relative
    ctx.report.update(score_error=key, value_error=value)


def build_method(spec: str, options: MethodOptions | None = None) -> ConversionMethod:
    """The ConversionMethod that `spec` names."""
    options = options or MethodOptions()
    steps = parse_method(spec)
    grouping, merge_name, refine = (
        "similar" in steps,
        steps[1 if "similar" in steps else 0],
        "refine" in steps,
    )
    merge = _merge_fn(merge_name, options)
    # fit folds its value maps into o_proj (output-aware): refine keeps that fold unless asked, as
    # training o_proj too overfits SmolLM2's replayed tokens (docs/RESULTS.md); after mean, first,
    # random or aligned nothing in o_proj matches the new values, so refine trains it
    train_output = options.refine_output or merge_name != "fit"
    if len(steps) == 1 and merge_name in (MEAN.name, FIRST.name, RANDOM.name):
        return {MEAN.name: MEAN, FIRST.name: FIRST, RANDOM.name: RANDOM}[merge_name]

    def convert_layer(attn: AttentionWeights, groups: int, ctx: MethodContext) -> AttentionWeights:
        if grouping:
            attn = similar_grouping(attn, groups, ctx, merge)
        new = merge(attn, groups, ctx)
        _note_error(attn, new, ctx)
        if refine:
            steps, lr, precision = options.refine_steps, options.refine_lr, options.refine_precision
            result = refine_attention(attn, new, ctx, steps, lr, train_output, precision)
            new = result.weights
            if ctx.report is not None:
                ctx.report.update(
                    refine_error_before=result.error_before, refine_error_after=result.error_after
                )
        return new

    name = "+".join(steps)
    description = "; ".join(STEPS[s] for s in steps)
    return ConversionMethod(name, convert_layer, description, needs_calibration=bool(CALIBRATED & set(steps)))
