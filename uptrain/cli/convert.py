"""`uptrain convert` and `uptrain inspect`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from uptrain.cli import app
from uptrain.cli.convert_display import ConversionDisplay
from uptrain.cli.options import with_options
from uptrain.config.conversion import ConvertSection
from uptrain.units import format_bytes

console = Console()


@app.command()
@with_options(ConvertSection)
def convert(
    src: str = typer.Argument(..., help="Source: a local directory, a Hub model id or a .gguf file."),
    out: Path | None = typer.Argument(None, help="Output directory (written atomically); not with --plan."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
    verify: bool = typer.Option(
        False,
        "--verify",
        help="Load both models and compare logits and KV cache; check OUT's config.json against its weights.",
    ),
    plan: bool = typer.Option(
        False,
        "--plan",
        help="Print the conversion's peak memory, FLOPs and expected time instead of converting "
        "(reads SRC's config.json only).",
    ),
    as_json: bool = typer.Option(False, "--json", help="With --plan: print the plan as JSON."),
    **options: Any,
) -> None:
    """Convert SRC to G key/value heads per layer (or, --target mla, to multi-head latent attention)
    and write it to OUT.

    SRC is a model directory, a Hub id, or a .gguf file (dequantized to --dtype, default fp32).
    Every option but --overwrite, --verify, --plan and --json is a key of a run config's model.convert
    section."""
    from uptrain.checkpoint.source import open_source
    from uptrain.convert.convert import check_conversion, convert_checkpoint

    _check_flags(out, verify, plan, as_json)
    settings = ConvertSection(source=src, **options)
    checked = check_conversion(settings)  # once, before anything is loaded; trusted from here on
    if plan:
        from uptrain.cli.convert_plan import print_plan

        print_plan(src, checked, as_json)
        return
    source = open_source(
        src,
        revision=settings.revision,
        allow_pickle=settings.allow_pickle,
        gguf_file=settings.gguf_file,
        dtype=settings.dtype,
    )
    with ConversionDisplay(console) as display:
        result = convert_checkpoint(
            source,
            out,
            checked,
            overwrite=overwrite,
            progress=display.tensors,
            calibration_progress=display.calibration,
        )
    _say_converted(result, out)
    ratio = result.kv_bytes_per_token_before / result.kv_bytes_per_token_after
    console.print(
        f"  KV cache per token: {format_bytes(result.kv_bytes_per_token_before)} -> "
        f"{format_bytes(result.kv_bytes_per_token_after)} ({ratio:.1f}x smaller)"
    )
    if verify:
        import torch

        from uptrain.convert.verify import verify_conversion

        elem = torch.empty((), dtype=getattr(torch, result.dtype)).element_size()
        v = verify_conversion(
            source.model_path, out, elem, gguf_file=source.gguf_file, allow_pickle=settings.allow_pickle
        )
        table = Table(title="verify (float32, same prompt)")
        for col in ("max |logit diff|", "same top-1", "KV bytes/token source", "KV bytes/token output"):
            table.add_column(col, justify="right")
        table.add_row(
            f"{v.max_logit_diff:.3g}",
            f"{v.same_argmax:.0%}",
            f"{v.kv_bytes_per_token_source:,}",
            f"{v.kv_bytes_per_token_output:,}",
        )
        console.print(table)
        if result.record.get("conversion", {}).get("target") == "mla":
            console.print("  serving: not checked for DeepseekV3 outputs (transformers loads and runs OUT)")
        else:
            report_serving(out)


def _check_flags(out: Path | None, verify: bool, plan: bool, as_json: bool) -> None:
    from uptrain.errors import UptrainError

    if plan and verify:
        raise UptrainError("--verify checks a written OUT, and --plan writes none; drop one of them")
    if as_json and not plan:
        raise UptrainError("--json prints the plan: add --plan (or drop --json to convert)")
    if out is None and not plan:
        raise UptrainError("OUT is missing: name the output directory (or pass --plan to only plan)")


def _say_converted(result: Any, out: Path) -> None:
    """What `uptrain convert` prints once OUT is written."""
    d = result.dims
    became = "" if result.target_model_type == result.model_type else f" -> {result.target_model_type}"
    conversion = result.record.get("conversion", {})
    if conversion.get("target") == "mla":
        console.print(
            f"converted {result.model_type}{became}: {d.heads} query heads, {d.kv_heads} KV heads -> "
            f"latent {conversion['kv_lora_rank']} + RoPE key {conversion['qk_rope_dim']} ({result.method}), "
            f"{result.dtype}"
        )
        for what, text in conversion["approximations"].items():
            if what != "exact":
                console.print(f"  {what}: {text}", markup=False, soft_wrap=True)
    else:
        console.print(
            f"converted {result.model_type}{became}: {d.heads} query heads, "
            f"{d.kv_heads} -> {result.groups} KV heads ({result.method}), {result.dtype}"
        )
    calibrated = conversion.get("calibration")
    if calibrated and "tokens" in calibrated:
        tokens, data, seconds = calibrated["tokens"], calibrated["data"], calibrated["seconds"]
        console.print(f"  calibrated on {tokens:,} tokens of {data} in {seconds:.1f} s")
    figures = result.record.get("conversion", {}).get("layer_figures", {})
    if figures:
        console.print(
            "  "
            + ", ".join(f"{k.replace('_', ' ')} {v['mean']:.3g}" for k, v in figures.items())
            + " (mean over layers)"
        )
    console.print(
        f"  wrote {result.tensors} tensors, {format_bytes(result.bytes_written)} "
        f"in {result.seconds:.1f} s to {out}"
    )


def report_serving(out: Path) -> None:
    """What serving engines read from OUT, checked against its weights: warnings, then the errors as
    lines and, if any, one error that fails the command."""
    from uptrain.convert.serving import check_serving
    from uptrain.errors import UptrainError

    check = check_serving(out)
    for warning in check.warnings:
        console.print(f"  warning: {warning}", markup=False, soft_wrap=True)
    for error in check.errors:
        console.print(f"  serving: {error}", markup=False, soft_wrap=True)
    if check.errors:
        more = f" (and {len(check.errors) - 1} more above)" if len(check.errors) > 1 else ""
        raise UptrainError(f"{out} is not what serving engines expect: {check.errors[0]}{more}")
    config = json.loads((out / "config.json").read_text())
    dtype = config.get("dtype") or config.get("torch_dtype")
    names = ", ".join(config["architectures"])
    line = f"  serving: config.json names {names}, dtype {dtype}; its keys match the weights"
    console.print(line, markup=False, soft_wrap=True)


@app.command("inspect")
def inspect_checkpoint(
    src: str = typer.Argument(..., help="A local checkpoint directory or a Hub model id."),
    revision: str = typer.Option(None, help="Hub revision of SRC."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    allow_pickle: bool = typer.Option(
        False, "--allow-pickle", help="Read pickled .bin weights (trusted sources only)."
    ),
) -> None:
    """Show a checkpoint's attention shape, size, KV-cache cost and the valid --groups values."""
    from uptrain.checkpoint.source import open_source
    from uptrain.convert.summary import summarize

    s = summarize(open_source(src, revision=revision, allow_pickle=allow_pickle))
    d = s.dims
    facts = {
        "model_type": s.model_type,
        "attention": s.attention_kind,
        "layers": d.layers,
        "query_heads": d.heads,
        "kv_heads": d.kv_heads,
        "head_dim": d.head_dim,
        "parameters": s.parameters,
        "dtype": s.dtype,
        "kv_bytes_per_token": s.kv_bytes_per_token,
        "kv_bytes_at_4k": s.kv_bytes(4096),
        "kv_bytes_at_32k": s.kv_bytes(32768),
        "valid_groups": s.valid_groups,
    }
    if as_json:
        typer.echo(json.dumps(facts, indent=2))
        return
    table = Table(title=f"{src}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    for key, value in facts.items():
        if key.startswith("kv_bytes"):
            value = f"{value:,} B ({format_bytes(value)})"
        elif key == "parameters":
            value = f"{value:,}"
        elif key == "valid_groups":
            value = ", ".join(map(str, value)) + "  (G=1: MQA)"
        table.add_row(key.replace("_", " "), str(value))
    console.print(table)
