"""A longer uptraining, method against method: held-out perplexity against tokens on one log-scale
plot, and the tokens each run needs to reach 2x and 1.5x the source's perplexity on the same blocks.

The runs are scripts/compare_methods.py runs (one `uptrain run` each) with periodic held-out
evaluation, e.g. the 500K-token SmolLM2 3 -> 1 study of docs/RESULTS.md:

    python scripts/compare_methods.py --setup smollm2 --methods mean fit+refine --train-tokens 524288 \\
        --threads 1 --work runs/methods-500k --results runs/methods-500k/results.json \\
        --set eval.blocks=32 --set eval.every_steps=32 --set checkpoint.every_steps=64
    python scripts/long_run.py runs/methods-500k/smollm2/runs/g1-mean-* \\
        runs/methods-500k/smollm2/runs/g1-fit_refine-* --labels mean fit+refine \\
        --json docs/long_run.json --plot docs/img/long-run.png

The held-out blocks are those training holds out (eval.blocks blocks of data.seq_len tokens of the
training text, never trained on); the source is scored on exactly those blocks here (the pipeline
scores it on report.dataset, the WikiText-2 test text, which the runs' end points also give). A
run still training contributes the points it has (`finished: false`).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import yaml

THRESHOLDS = (2.0, 1.5)


def tokens_to_reach(points: list[tuple[int, float]], target: float) -> int | None:
    """Tokens at which the held-out perplexity first reaches `target`, interpolated linearly in
    log-perplexity between the two evaluations around the crossing (None: not reached)."""
    for (t0, p0), (t1, p1) in zip(points, points[1:], strict=False):
        if p0 <= target:
            return t0
        if p1 <= target:
            frac = (math.log(p0) - math.log(target)) / (math.log(p0) - math.log(p1))
            return round(t0 + frac * (t1 - t0))
    return points[0][0] if points and len(points) == 1 and points[0][1] <= target else None


def heldout_points(run: Path) -> list[tuple[int, float]]:
    points = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("eval_ppl") is not None:
            points.append((int(record["tokens"]), float(record["eval_ppl"])))
    return sorted(dict(points).items())


def source_heldout_perplexity(run: Path) -> float:
    """The source (OUTPUT/source) scored on the run's held-out blocks, by the pipeline's evaluator."""
    from uptrain.config import parse_config
    from uptrain.pipeline.evaluation import evaluate_checkpoint, evaluation_tokens, run_tokenizer
    from uptrain.train.run_dir import RunDir

    raw = yaml.safe_load((run / "run.yaml").read_text())
    raw["report"]["dataset"] = None
    cfg = parse_config(raw)
    tokenizer = run_tokenizer(cfg, run / "converted")
    tokens = evaluation_tokens(cfg, RunDir(run), tokenizer)
    return evaluate_checkpoint("source", run / "source", tokens, tokenizer)["models"][0]["perplexity"]


def _json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def summary(run: Path, label: str, source_ppl: float) -> dict[str, Any]:
    points = heldout_points(run)
    train = _json(run / "stages" / "train.json") or {}
    ends = {
        role: (_json(run / "evaluation" / f"{role}.json") or {}).get("models", [{}])[0].get("perplexity")
        for role in ("source", "converted", "uptrained")
    }
    record = _json(run / "converted" / "uptrain.json") or {}
    return {
        "label": label,
        "finished": (run / "final" / "uptrain.json").is_file(),
        "points": points,
        "tokens_to": {f"{k}x": tokens_to_reach(points, k * source_ppl) for k in THRESHOLDS},
        "last": points[-1] if points else None,
        "train_seconds": train.get("seconds"),
        "convert_seconds": (record.get("conversion") or {}).get("seconds"),
        "end_points": ends,
    }


def plot(rows: list[dict[str, Any]], source_ppl: float, path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.5), dpi=120, layout="constrained")
    ax = fig.subplots()
    for row, colour in zip(rows, ("#c44e52", "#55a868", "#8172b2", "#ccb974"), strict=False):
        ax.plot(*zip(*row["points"], strict=True), "o-", ms=3, color=colour, label=row["label"])
    for k, style in ((1.0, "-"), *((k, "--") for k in THRESHOLDS)):
        label = "source" if k == 1.0 else f"{k:g}x source"
        ax.axhline(
            k * source_ppl,
            linestyle=style,
            color="#4c72b0",
            alpha=0.7,
            label=f"{label}: {k * source_ppl:.1f}",
        )
    ax.set_yscale("log")
    ax.set_xlabel("uptraining tokens")
    ax.set_ylabel("held-out perplexity (log scale)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    ax.set_title(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")


MARKS = (0, 65536, 131072, 262144, 524288)


def _ppl_at(points: list[tuple[int, float]], tokens: int) -> str:
    value = dict(points).get(tokens)
    return f"{value:,.2f}" if value is not None else ""


def _tokens(value: int | None) -> str:
    return f"{value:,}" if value is not None else "not reached"


def markdown(result: dict[str, Any]) -> str:
    """The table of docs/RESULTS.md: held-out perplexity at a few token counts, the tokens to reach
    2x and 1.5x the source's held-out perplexity, and the WikiText-2 end points."""
    src = result["source_heldout_ppl"]
    marks = " | ".join(f"held-out at {m // 1024}K" for m in MARKS)
    lines = [
        f"| run | {marks} | tokens to 2x ({2 * src:.1f}) | tokens to 1.5x ({1.5 * src:.1f}) "
        "| test text: converted | test text: uptrained | training wall |",
        "|---|" + "---:|" * (len(MARKS) + 5),
    ]
    for row in result["runs"]:
        ends, wall = row["end_points"], row["train_seconds"]
        cells = [_ppl_at(row["points"], m) for m in MARKS]
        cells += [_tokens(row["tokens_to"]["2.0x"]), _tokens(row["tokens_to"]["1.5x"])]
        cells += [f"{ends[r]:,.2f}" if ends.get(r) else "" for r in ("converted", "uptrained")]
        cells.append(f"{wall / 60:.0f} min" if wall else "still training")
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--labels", nargs="+")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    labels = args.labels or [r.name for r in args.runs]
    source_ppl = source_heldout_perplexity(args.runs[0])
    rows = [summary(run, label, source_ppl) for run, label in zip(args.runs, labels, strict=True)]
    result = {"source_heldout_ppl": source_ppl, "thresholds": list(THRESHOLDS), "runs": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        plot(rows, source_ppl, args.plot, "SmolLM2-135M 3 -> 1 KV heads: held-out perplexity")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}))
    for row in rows:
        print(json.dumps({k: v for k, v in row.items() if k != "points"}))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
