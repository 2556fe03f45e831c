"""A composed method (uptrain.config.methods: its steps, each with its options) as the
ConversionMethod the streaming loop runs: grouping, then the merge, then refinement, each step's
arithmetic looked up here by the step's name."""

from __future__ import annotations

import functools

from uptrain.architectures import AttentionWeights
from uptrain.config.methods import STEPS, ComposedMethod, Fit, Refine, Similar, compose
from uptrain.convert.methods.aligned import aligned_layer
from uptrain.convert.methods.base import ConversionMethod, LayerFn, MethodContext
from uptrain.convert.methods.basic import FIRST, MEAN, RANDOM
from uptrain.convert.methods.fit import fit_layer
from uptrain.convert.methods.metric import calibrated_setup
from uptrain.convert.methods.objective import layer_error
from uptrain.convert.methods.refine import refine_attention
from uptrain.convert.methods.similar import similar_grouping

BASIC = {MEAN.name: MEAN, FIRST.name: FIRST, RANDOM.name: RANDOM}  # uncalibrated: one step alone


def _merge_fn(method: ComposedMethod) -> LayerFn:
    name = method.merge.name
    if name in BASIC:
        return BASIC[name].convert_layer
    if name == "aligned":
        return aligned_layer
    fit: Fit = method.find(Fit)
    return functools.partial(
        fit_layer, query_aware=fit.query_aware, output_aware=fit.output_aware, mixed_values=fit.mixed_values
    )


def _note_error(source: AttentionWeights, new: AttentionWeights, ctx: MethodContext) -> None:
    """Record the calibrated score and value errors of the merge, where they are defined."""
    cal = ctx.calibration
    if ctx.report is None or cal is None or cal.keys_normalized or source.kv_extras:
        return
    setup = calibrated_setup(source, ctx, "report")
    key, value = layer_error(source, new, setup.metric, setup.pairs, setup.mixed).relative
    ctx.report.update(score_error=key, value_error=value)


def build_method(method: ComposedMethod | str) -> ConversionMethod:
    """The ConversionMethod that `method` (or the spec naming it, with default options) composes.
    A refine step's precision is used as given: resolve "auto" first (calibrated.resolve_options)."""
    if isinstance(method, str):
        method = compose(method)
    if len(method.steps) == 1 and method.merge.name in BASIC:
        return BASIC[method.merge.name]
    merge = _merge_fn(method)
    grouping = method.find(Similar) is not None
    refine: Refine | None = method.find(Refine)
    # fit folds its value maps into o_proj (output-aware): refine keeps that fold unless asked, as
    # training o_proj too overfits SmolLM2's replayed tokens (docs/RESULTS.md); after mean, first,
    # random or aligned nothing in o_proj matches the new values, so refine trains it
    train_output = refine is not None and (refine.output or method.merge.name != Fit.name)

    def convert_layer(attn: AttentionWeights, groups: int, ctx: MethodContext) -> AttentionWeights:
        if grouping:
            attn = similar_grouping(attn, groups, ctx, merge)
        new = merge(attn, groups, ctx)
        _note_error(attn, new, ctx)
        if refine is not None:
            result = refine_attention(attn, new, ctx, refine.steps, refine.lr, train_output, refine.precision)
            new = result.weights
            if ctx.report is not None:
                ctx.report.update(
                    refine_error_before=result.error_before, refine_error_after=result.error_after
                )
        return new

    description = "; ".join(STEPS[s.name].description for s in method.steps)
    return ConversionMethod(method.name, convert_layer, description, needs_calibration=method.calibrates)
