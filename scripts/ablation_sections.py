"""The experiment sections (a)-(e) and the table of every checkpoint, of the ablations report
(scripts/ablation_report.py assembles them). Every sentence that compares numbers is computed here from
them, so a rerun with other numbers cannot leave a stale claim behind."""

from __future__ import annotations

import math

from ablation_format import fmt, pct, ppl, recovered, table, variants_of
from ablation_plan import UPTRAIN_LR, Model, Plan
from ablation_plots import objective_label, variant_label


def _ranking(plan: Plan, results: dict, variant: int, seed: int) -> list[Model]:
    models = [
        m
        for m in plan.experiments["methods"]
        if m.groups == variant and m.fraction == plan.main and m.seed == seed
    ]
    return sorted(models, key=lambda m: results[m.name]["perplexity"])


def _method_verdicts(plan: Plan, results: dict, methods: list[str], seeds: list[int]) -> list[str]:
    """Per variant: the methods' order after uptraining, and whether it is the paper's."""
    paper = [m for m in ("mean", "first", "random") if m in methods]
    verdicts = []
    for g in variants_of(plan, "methods"):
        orders = []
        for s in seeds:
            ranked = _ranking(plan, results, g, s)
            order = " < ".join(f"{m.method} {results[m.name]['perplexity']:.1f}" for m in ranked)
            orders.append(f"seed {s}: {order}")
        agree = [[m.method for m in _ranking(plan, results, g, s)] == paper for s in seeds]
        verdict = (
            "**agrees with the paper** with every data order"
            if all(agree)
            else "**disagrees with the paper** with every data order"
            if not any(agree)
            else "**agrees with the paper with some data orders only**: the methods are closer than the "
            "spread between seeds"
        )
        label = variant_label(g, plan.heads)
        verdicts.append(f"- {label}, perplexity after uptraining, best first: {'; '.join(orders)}. ")
        verdicts[-1] += f"The order {verdict}."
    return verdicts


def methods_section(plan: Plan, results: dict, img: str) -> str:
    models = [m for m in plan.experiments["methods"] if m.groups]
    variants = variants_of(plan, "methods")
    methods = list(dict.fromkeys(m.method for m in models))
    seeds = sorted({m.seed for m in models if m.fraction})
    stages = ["converted"] + [f"+{pct(plan.main)}, seed {s}" for s in seeds]
    header = ["method"] + [f"{variant_label(g, plan.heads)} {when}" for g in variants for when in stages]
    base = results["reference"]["perplexity"]
    rows = [["MHA reference (no conversion)"] + [fmt(base, 2)] * (len(stages) * len(variants))]
    for method in methods:
        row = [method]
        for g in variants:
            row.append(fmt(ppl(results, Model(g, method)), 2))
            row += [fmt(ppl(results, Model(g, method, plan.main, seed=s)), 2) for s in seeds]
        rows.append(row)
    verdicts = _method_verdicts(plan, results, methods, seeds)
    return (
        f"### (a) Conversion method (paper Figure 4)\n\n"
        "The paper compares them on T5-Large converted to MQA and uptrained on 5%, and finds mean "
        "pooling best, then the first head, then random initialisation. Here: mean-pooling, keeping "
        "the first head of each group, or random initialisation of the K/V "
        f"projections, then uptraining on {pct(plan.main)} of the pre-training tokens (cross-entropy), "
        f"each with {len(seeds)} orders of the uptraining data (train.seed). WikiText-2 perplexity, lower "
        "is better.\n\n"
        + table(header, rows)
        + "\n\n"
        + "\n".join(verdicts)
        + f"\n\n![methods]({img}/ablation-methods.png)\n"
    )


def _fraction_notes(plan: Plan, results: dict, last: float) -> list[str]:
    """What conversion cost and uptraining won back, per variant; how that compares with the paper."""
    variants = variants_of(plan, "fractions")
    base = results["reference"]["perplexity"]
    notes = []
    mha = Model(plan.heads, "mean", plan.main)
    for g in variants:
        before, after = ppl(results, Model(g)), ppl(results, Model(g, "mean", plan.main))
        closed = recovered(before, after, base)
        parts = [f"conversion raises perplexity {before / base:.2f}x"]
        if closed is not None:
            parts.append(
                f"uptraining on {pct(plan.main)} closes {closed:.0%} of that gap (in log-perplexity)"
            )
        end = f"ending {after / base - 1:+.1%} from the MHA reference"
        if mha.name in results:
            end += f" and {after / ppl(results, mha) - 1:+.1%} from the MHA model trained on the same tokens"
        parts.append(end)
        if last > plan.main:
            further = ppl(results, Model(g, "mean", last)) / after - 1
            parts.append(f"going on to {pct(last)} changes perplexity by a further {further:+.1%}")
        notes.append(f"- {variant_label(g, plan.heads)}: " + "; ".join(parts) + ".")
    notes.append(
        "- The paper (T5-XXL, its Figure 5 and Table 1): GQA is reasonable right after conversion while "
        "MQA needs uptraining to be useful; both gain from 5% uptraining, with diminishing returns from "
        "10%, and GQA uptrained on 5% comes within 0.1 points of the MHA model's average score."
    )
    gaps = [ppl(results, Model(g, "mean", plan.main)) / base - 1 for g in variants]
    if max(gaps) > 0.05:
        notes.append(
            f"- **Here, {pct(plan.main)} of uptraining is not enough for parity**: every variant stays "
            f"{min(gaps):.0%} or more above the MHA reference's perplexity, unlike the paper's near-parity "
            "(perplexity and the paper's task scores are different yardsticks, but the gap is not small)."
        )
    return notes


def fractions_section(plan: Plan, results: dict, img: str) -> str:
    variants = variants_of(plan, "fractions")
    fractions = sorted({m.fraction for m in plan.experiments["fractions"] if m.groups})
    base = results["reference"]["perplexity"]
    header = ["uptraining", "tokens"]
    for g in variants:
        header += [f"{variant_label(g, plan.heads)} ppl", "gap closed"]
    rows = [["MHA reference", "–"] + [fmt(base, 2), "–"] * len(variants)]
    for f in fractions:
        tokens = next((results[Model(g, "mean", f).name].get("uptraining_tokens") for g in variants), None)
        row = [pct(f), f"{tokens:,}" if tokens else "0"]
        for g in variants:
            before, after = ppl(results, Model(g)), ppl(results, Model(g, "mean", f))
            closed = recovered(before, after, base)
            row += [fmt(after, 2), "–" if closed is None or not f else f"{closed:.0%}"]
        rows.append(row)
    notes = _fraction_notes(plan, results, fractions[-1])
    return (
        "### (b) Uptraining fraction (paper Figure 5)\n\n"
        "Mean-pooled conversions uptrained on a fraction of the reference's pre-training tokens (0% is "
        "the converted checkpoint as it is). *Gap closed*: the share of the log-perplexity the conversion "
        "lost that uptraining won back.\n\n"
        + table(header, rows)
        + "\n\n"
        + "\n".join(notes)
        + f"\n\n![fractions]({img}/ablation-fractions.png)\n"
    )


def _control_note(plan: Plan, control: float) -> str:
    """What the MHA model trained on the same extra tokens (G = H) says about the extra training."""
    if control > 0:
        return (
            f"- The control: the MHA model itself, trained on {pct(plan.main)} more with the uptraining "
            f"recipe, ends {control:+.1%} from where it started (its held-out corpus loss rises too): most "
            "likely the cost of warming the learning rate up again after pre-training's cosine reached 0, "
            "which the extra tokens do not repay at this budget. Part of every uptrained model's gap to "
            "the reference is this cost, not the conversion; (b) compares with this control as well."
        )
    return (
        f"- The control: the MHA model itself, trained on {pct(plan.main)} more, improves by "
        f"{-control:.1%}; part of what uptraining wins back is this extra training, not recovery."
    )


def groups_section(plan: Plan, results: dict, img: str) -> str:
    groups = sorted({m.groups for m in plan.experiments["groups"] if m.groups})
    base = results["reference"]
    header = ["G", "KV-cache bytes/token", "vs MHA", "converted ppl", f"+{pct(plan.main)} ppl"]
    rows = [["MHA reference", f"{base['kv_bytes_per_token']:,}", "1", fmt(base["perplexity"], 2), "–"]]
    for g in groups:
        kv = results[Model(g).name]["kv_bytes_per_token"]
        ratio = base["kv_bytes_per_token"] // kv
        converted, uptrained = ppl(results, Model(g)), ppl(results, Model(g, "mean", plan.main))
        rows.append(
            [str(g), f"{kv:,}", f"1/{ratio}" if ratio > 1 else "1", fmt(converted, 2), fmt(uptrained, 2)]
        )
    after = [ppl(results, Model(g, "mean", plan.main)) for g in groups]
    monotone = all(a >= b for a, b in zip(after, after[1:], strict=False))
    trend = "falls steadily" if monotone else "does not fall steadily"
    notes = [
        f"- Perplexity after uptraining {trend} as G grows from 1 to H (G = 1: {after[0]:.2f}; "
        f"G = {groups[-1]}: {after[-1]:.2f}), while the KV cache grows in proportion to G."
    ]
    notes.append(_control_note(plan, after[-1] / base["perplexity"] - 1))
    return (
        "### (c) Number of KV groups (analogue of paper Figure 6)\n\n"
        f"Mean-pooled to every G that divides H = {plan.heads}, uptrained on {pct(plan.main)}; "
        f"G = {plan.heads} is the MHA model itself trained on the same extra tokens (the control for "
        "what extra training alone does). The paper plots inference time against G for a large model; "
        "the cost that G sets is the KV cache, measured here from the model's own cache (fp32).\n\n"
        + table(header, rows)
        + "\n\n"
        + "\n".join(notes)
        + "\n"
        + f"\n![groups]({img}/ablation-groups.png)\n"
    )


def objective_section(plan: Plan, results: dict, img: str) -> str:
    variants = variants_of(plan, "objective")
    weights = sorted({m.distill for m in plan.experiments["objective"] if m.groups})
    header = ["objective"]
    for g in variants:
        header += [f"{variant_label(g, plan.heads)} ppl", "held-out ppl", "train s"]
    base = results["reference"]["perplexity"]
    rows = [["MHA reference"] + [fmt(base, 2), "–", "–"] * len(variants)]
    for w in weights:
        row = [objective_label(w)]
        for g in variants:
            r = results[Model(g, "mean", plan.main, w).name]
            heldout = math.exp(r["heldout_loss_after"])
            row += [fmt(r["perplexity"], 2), fmt(heldout, 2), fmt(r.get("train_seconds"), 0)]
        rows.append(row)
    notes = []
    for g in variants:
        best = min(weights, key=lambda w: ppl(results, Model(g, "mean", plan.main, w)))
        label = variant_label(g, plan.heads)
        notes.append(f"- {label}: lowest WikiText-2 perplexity with {objective_label(best)}.")
    return (
        "### (d) Cross-entropy vs distillation\n\n"
        f"The same {pct(plan.main)} budget of tokens, with uptrain train's `distill` section: the KL to the "
        "frozen MHA reference's next-token distribution (temperature 1), mixed with cross-entropy as "
        "`(1 - w) CE + w KL`. A distillation step also runs the teacher forward, so it costs more compute "
        "per token (the *train s* column). The paper uptrains with the pre-training objective only.\n\n"
        + table(header, rows)
        + "\n\n"
        + "\n".join(notes)
        + f"\n\n![objective]({img}/ablation-objective.png)\n"
    )


def lr_section(plan: Plan, results: dict, pretraining_lr: float) -> str:
    models = [m for m in plan.experiments["lr"] if m.groups is not None]
    base = results["reference"]["perplexity"]
    rows = [["MHA reference", fmt(base, 2), "–"]]
    for m in models:
        r = results[m.name]
        label = f"{m.lr:g}" + (" (the recipe)" if m.lr == UPTRAIN_LR else "")
        rows.append([label, fmt(r["perplexity"], 2), fmt(math.exp(r["heldout_loss_after"]), 2)])
    best = min(models, key=lambda m: results[m.name]["perplexity"])
    verdict = (
        "the recipe's learning rate is the best of these"
        if best.lr == UPTRAIN_LR
        else f"peak lr {best.lr:g} does better than the recipe's {UPTRAIN_LR:g}, so the other tables "
        "understate what uptraining recovers"
    )
    return (
        "### (e) Uptraining learning rate\n\n"
        f"The other experiments uptrain at one peak learning rate, {UPTRAIN_LR:g} (the reference was "
        f"pre-trained at a peak of {pretraining_lr:g}), chosen before any result was seen. This checks "
        f"that choice on {variant_label(models[0].groups, plan.heads)} at {pct(plan.main)}.\n\n"
        + table(["peak lr", "WikiText-2 ppl", "held-out ppl"], rows)
        + f"\n\n- On WikiText-2, {verdict}.\n"
    )


def runs_section(plan: Plan, results: dict) -> str:
    header = [
        "checkpoint",
        "G",
        "method",
        "uptraining",
        "objective",
        "lr",
        "steps",
        "WikiText-2 ppl",
        "held-out ppl before → after",
        "train s",
        "eval s",
    ]
    rows = []
    for m in plan.models:
        r = results[m.name]
        before, after = r.get("heldout_loss_before"), r.get("heldout_loss_after")
        heldout = f"{math.exp(before):.1f} → {math.exp(after):.1f}" if before and after else "–"
        rows.append(
            [
                f"`{m.name}`",
                str(m.groups or plan.heads),
                m.method if m.groups else "–",
                pct(m.fraction),
                objective_label(m.distill) if m.fraction else "–",
                f"{m.lr:g}" if m.fraction else "–",
                str(r.get("uptraining_steps", "–")),
                fmt(r["perplexity"], 2),
                heldout,
                fmt(r.get("train_seconds"), 0),
                fmt(r.get("eval_seconds"), 0),
            ]
        )
    return "### Every checkpoint\n\n" + table(header, rows)
