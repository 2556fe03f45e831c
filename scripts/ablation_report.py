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

from ablation_format import checkout_relative, table
from ablation_plan import UPTRAIN_LR, Plan
from ablation_plots import write_plots
from ablation_sections import (
    fractions_section,
    groups_section,
    lr_section,
    methods_section,
    objective_section,
    runs_section,
)

BEGIN = "<!-- ablations:begin (written by scripts/ablations.py; edits inside are overwritten) -->"
END = "<!-- ablations:end -->"
PAGE_TITLE = "# Results\n"


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
        "exact fraction of its pre-training.\n\n" + table(["", ""], rows)
    )


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
    out = checkout_relative(str(study.reference.parent.parent))
    words = [
        "python scripts/build_reference_model.py",
        f"--wikitext {checkout_relative(wikitext)}",
        f"--out {out}",
    ]
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
        "Both scripts are resumable: the builder skips what it has finished (corpus, tokenizer, "
        "pre-training), and each uptrained checkpoint is one `uptrain run` under `--work` whose finished "
        "stages (conversion, evaluations, uptraining) the pipeline skips, so a second run only rewrites "
        f"this section and the plots. Measured time of this study: {train / 60:.1f} min of uptraining and "
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
