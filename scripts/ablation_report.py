"""The ablations section of docs/RESULTS.md: tables, plots and the statements the numbers support.

Written by scripts/ablations.py between two marker lines, so other sections of the page (e.g. the
conversion methods study) stay as they are. Every sentence that compares numbers is computed from
them here, so a rerun with other numbers cannot leave a stale claim behind.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ablation_plan import UPTRAIN_LR, Model, Plan
from ablation_plots import objective_label, variant_label, write_plots

BEGIN = "<!-- ablations:begin (written by scripts/ablations.py; edits inside are overwritten) -->"
END = "<!-- ablations:end -->"
PAGE_TITLE = "# Results\n"


def ppl(results: dict[str, dict[str, Any]], model: Any) -> float:
    return results[model.name]["perplexity"]


def fmt(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def pct(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _recovered(before: float, after: float, reference: float) -> float | None:
    """Share of the conversion's log-perplexity gap that uptraining closed."""
    gap = math.log(before) - math.log(reference)
    return None if gap <= 0 else (math.log(before) - math.log(after)) / gap


# ---------------------------------------------------------------- the page


def _variants(plan: Plan, experiment: str) -> list[int]:
    return sorted({m.groups for m in plan.experiments[experiment] if m.groups is not None}, reverse=True)


def _param_count(directory: Path) -> int:
    from safetensors import safe_open

    total = 0
    for shard in sorted(directory.glob("*.safetensors")):
        with safe_open(str(shard), "pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                total += math.prod(f.get_slice(name).get_shape())
    return total


def reference_section(study: Any, results: dict) -> str:
    record = json.loads((study.reference / "uptrain.json").read_text())
    config = json.loads((study.reference / "config.json").read_text())
    training, built = record["training"], record.get("reference", {})
    metrics_file = study.reference.parent / "metrics.jsonl"
    metrics = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    elapsed = max((m.get("elapsed_s") or 0) for m in metrics)
    corpus = built.get("corpus", {})
    sources = ", ".join(
        f"{name} ({v['documents']:,} documents, {v['characters'] / 1e6:.2f} M characters)"
        for name, v in corpus.get("sources", {}).items()
    )
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    versions = ", ".join(f"{k} {v}" for k, v in built.get("versions", {}).items() if k != "platform")
    ref, loss = results["reference"], training["heldout_loss"]
    rows = [
        [
            "architecture",
            f"Llama, {config['num_hidden_layers']} layers, width {config['hidden_size']}, "
            f"MLP {config['intermediate_size']}, {heads} query heads = "
            f"{config['num_key_value_heads']} KV heads of {head_dim} dims, untied embeddings",
        ],
        ["parameters", f"{_param_count(study.reference) / 1e6:.2f} M"],
        ["tokenizer", f"byte-level BPE, {config['vocab_size']:,} tokens, trained on the corpus"],
        ["pre-training corpus", sources or "–"],
        [
            "pre-training",
            f"{record['pretraining_tokens']:,} tokens = {training['steps']:,} steps of "
            f"{training['global_batch']} x {training['seq_len']} tokens, AdamW, peak lr "
            f"{training['optim']['lr']:g}, cosine, {elapsed / 60:.1f} min",
        ],
        ["held-out loss (corpus)", f"{loss:.3f} (perplexity {math.exp(loss):.1f})"],
        ["WikiText-2 perplexity", f"{ref['perplexity']:.2f}"],
        ["KV-cache bytes per token", f"{ref['kv_bytes_per_token']:,} (fp32)"],
        ["versions", versions or "–"],
    ]
    return (
        "### The reference model\n\n"
        "Built by `scripts/build_reference_model.py` and pre-trained from scratch by uptrain's own training "
        "loop; its `uptrain.json` records `pretraining_tokens`, so every uptraining budget below is an "
        "exact fraction of its pre-training.\n\n" + _table(["", ""], rows)
    )


def _ranking(plan: Plan, results: dict, variant: int, seed: int) -> list[Model]:
    models = [
        m
        for m in plan.experiments["methods"]
        if m.groups == variant and m.fraction == plan.main and m.seed == seed
    ]
    return sorted(models, key=lambda m: results[m.name]["perplexity"])


def methods_section(plan: Plan, results: dict, img: str) -> str:
    models = [m for m in plan.experiments["methods"] if m.groups]
    variants = _variants(plan, "methods")
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
    paper = [m for m in ("mean", "first", "random") if m in methods]
    verdicts = []
    for g in variants:
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
    return (
        f"### (a) Conversion method (paper Figure 4)\n\n"
        "The paper compares them on T5-Large converted to MQA and uptrained on 5%, and finds mean "
        "pooling best, then the first head, then random initialisation. Here: mean-pooling, keeping "
        "the first head of each group, or random initialisation of the K/V "
        f"projections, then uptraining on {pct(plan.main)} of the pre-training tokens (cross-entropy), "
        f"each with {len(seeds)} orders of the uptraining data (train.seed). WikiText-2 perplexity, lower "
        "is better.\n\n"
        + _table(header, rows)
        + "\n\n"
        + "\n".join(verdicts)
        + f"\n\n![methods]({img}/ablation-methods.png)\n"
    )


def fractions_section(plan: Plan, results: dict, img: str) -> str:
    variants = _variants(plan, "fractions")
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
            closed = _recovered(before, after, base)
            row += [fmt(after, 2), "–" if closed is None or not f else f"{closed:.0%}"]
        rows.append(row)
    notes = []
    mha = Model(plan.heads, "mean", plan.main)
    last = fractions[-1]
    for g in variants:
        before, after = ppl(results, Model(g)), ppl(results, Model(g, "mean", plan.main))
        closed = _recovered(before, after, base)
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
    return (
        "### (b) Uptraining fraction (paper Figure 5)\n\n"
        "Mean-pooled conversions uptrained on a fraction of the reference's pre-training tokens (0% is "
        "the converted checkpoint as it is). *Gap closed*: the share of the log-perplexity the conversion "
        "lost that uptraining won back.\n\n"
        + _table(header, rows)
        + "\n\n"
        + "\n".join(notes)
        + f"\n\n![fractions]({img}/ablation-fractions.png)\n"
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
    control = after[-1] / base["perplexity"] - 1
    if control > 0:
        notes.append(
            f"- The control: the MHA model itself, trained on {pct(plan.main)} more with the uptraining "
            f"recipe, ends {control:+.1%} from where it started (its held-out corpus loss rises too): most "
            "likely the cost of warming the learning rate up again after pre-training's cosine reached 0, "
            "which the extra tokens do not repay at this budget. Part of every uptrained model's gap to "
            "the reference is this cost, not the conversion; (b) compares with this control as well."
        )
    else:
        notes.append(
            f"- The control: the MHA model itself, trained on {pct(plan.main)} more, improves by "
            f"{-control:.1%}; part of what uptraining wins back is this extra training, not recovery."
        )
    return (
        "### (c) Number of KV groups (analogue of paper Figure 6)\n\n"
        f"Mean-pooled to every G that divides H = {plan.heads}, uptrained on {pct(plan.main)}; "
        f"G = {plan.heads} is the MHA model itself trained on the same extra tokens (the control for "
        "what extra training alone does). The paper plots inference time against G for a large model; "
        "the cost that G sets is the KV cache, measured here from the model's own cache (fp32).\n\n"
        + _table(header, rows)
        + "\n\n"
        + "\n".join(notes)
        + "\n"
        + f"\n![groups]({img}/ablation-groups.png)\n"
    )


def objective_section(plan: Plan, results: dict, img: str) -> str:
    variants = _variants(plan, "objective")
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
        + _table(header, rows)
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
        + _table(["peak lr", "WikiText-2 ppl", "held-out ppl"], rows)
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
    return "### Every checkpoint\n\n" + _table(header, rows)


def setup_section(study: Any, plan: Plan, results: dict) -> str:
    from ablation_plan import UPTRAIN_SEED

    ref = results["reference"]
    return (
        "**Data.** Pre-training and uptraining text (scripts/build_reference_model.py): the validation "
        "split of WikiText-2 in its tokenized version, where rare words are `<unk>` (Merity et al. 2016, "
        "Salesforce/wikitext `wikitext-2-v1`, CC BY-SA 3.0), the Python documentation topics that ship "
        "with Python (`pydoc_data.topics`) and the docstrings of the Python standard library's modules, "
        "classes and functions (both PSF license), shuffled by document; the BPE tokenizer is trained on "
        "this text only.\n\n"
        f"**Evaluation.** Perplexity on the first {ref['tokens']:,} tokens of `{study.eval_source}` "
        f"(WikiText-2 raw, test split; never trained on), sliding windows of {study.window} tokens "
        f"every {study.window // 2} (uptrain.evaluate, the Hugging Face guide's method), fp32 on CPU; "
        "every checkpoint is scored on exactly the same tokens.\n\n"
        f"**Uptraining.** `uptrain train` on the reference's own pre-training corpus (as in the paper) "
        f"with its batch and sequence length: AdamW (0.9, 0.95), weight decay 0.1, peak lr "
        f"{UPTRAIN_LR:g} (other values in (e)) after a 10% warmup, cosine to 0, data-order seed "
        f"{UPTRAIN_SEED}; the budget is "
        "`budget.fraction` of the `pretraining_tokens` recorded in the reference's uptrain.json, "
        "rounded down to whole steps. The *held-out* loss is that of the corpus blocks both pre-training "
        "and uptraining hold out. One seed per setting: differences of a few percent are within what "
        f"another seed could change. GQA here is G = H/4 = {max(1, plan.heads // 4)} groups; MQA is G = 1."
    )


def builder_command(study: Any) -> str:
    """The scripts/build_reference_model.py command that built the reference, from its uptrain.json."""
    from build_reference_model import parse_args

    record = json.loads((study.reference / "uptrain.json").read_text()).get("reference", {})
    used = record.get("arguments", {})
    wikitext = record.get("corpus", {}).get("wikitext", {}).get("path", "wikitext-2-valid-tokenized.txt")
    defaults = vars(parse_args(["--wikitext", wikitext]))
    out = os.path.relpath(study.reference.parent.parent)
    words = ["python scripts/build_reference_model.py", f"--wikitext {wikitext}", f"--out {out}"]
    for key, value in used.items():
        if key in defaults and value != defaults[key]:
            flag = "--" + key.replace("_", "-")
            words.append(flag if value is True else f"{flag} {value}")
    return " ".join(words)


def commands_section(study: Any, command: str, results: dict) -> str:
    train = sum(r.get("train_seconds") or 0 for r in results.values())
    evals = sum(r.get("eval_seconds") or 0 for r in results.values())
    return (
        "### Re-running\n\n"
        "```bash\n"
        f"{builder_command(study)}\n"
        f"{command}\n"
        "```\n\n"
        "Both scripts are resumable: what is finished (corpus, tokenizer, pre-training; each conversion, "
        "uptraining run and evaluation under `--work`) is skipped, so a second run only rewrites this "
        f"section and the plots. Measured time of this study: {train / 60:.1f} min of uptraining and "
        f"{evals / 60:.1f} min of evaluation (1 torch thread on a shared 2-core machine)."
    )


def write_report(study: Any, plan: Plan, results: dict, page: Path, img_dir: Path, command: str) -> Path:
    """Plots into img_dir, and the ablations section of `page` (created if missing)."""
    write_plots(img_dir, plan, results)
    record = json.loads((study.reference / "uptrain.json").read_text())
    pretraining_lr = record["training"]["optim"]["lr"]
    img = Path(os.path.relpath(img_dir.absolute(), page.absolute().parent)).as_posix()
    body = "\n\n".join(
        [
            "## GQA ablations on a tiny pretrained MHA model",
            "The GQA paper's ablations (Ainslie et al. 2023, Figures 4-6), reproduced at toy scale: a "
            "pretrained multi-head model converted to grouped-query (GQA) and multi-query (MQA) attention "
            "and uptrained with uptrain. The numbers below are what was measured; where they disagree with "
            "the paper, the text says so.",
            setup_section(study, plan, results),
            reference_section(study, results),
            methods_section(plan, results, img),
            fractions_section(plan, results, img),
            groups_section(plan, results, img),
            objective_section(plan, results, img),
            lr_section(plan, results, pretraining_lr),
            runs_section(plan, results),
            commands_section(study, command, results),
        ]
    )
    section = f"{BEGIN}\n{body}\n{END}"
    text = page.read_text() if page.is_file() else PAGE_TITLE
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    from uptrain.checkpoint.atomic import atomic_write_text

    page.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(page, text)
    return page
