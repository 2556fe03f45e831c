"""`uptrain plan --config X.yaml [--accelerate-config Y.yaml]`: memory and compute before any work."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from uptrain.cli import app


@app.command("plan")
def plan_command(
    config: Path = typer.Option(..., "--config", "-c", help="The YAML config (see configs/)."),
    accelerate_config: Path = typer.Option(
        None,
        "--accelerate-config",
        help="The accelerate launch config the run will use (configs/accelerate/); default: 1 process.",
    ),
    overrides: list[str] = typer.Option(None, "--set", help="Override a config field (repeatable)."),
    device_memory: str = typer.Option(
        None, "--device-memory", help="Memory of one device, e.g. 80GB (default: the GPU found here)."
    ),
    tflops: float = typer.Option(
        None, "--tflops", help="Peak bf16 TFLOP/s of one device, for a time estimate (e.g. 989 for an H100)."
    ),
    mfu: float = typer.Option(0.4, "--mfu", help="Model FLOPs utilisation assumed by the time estimate."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Per-device memory (weights, gradients, AdamW, activations) and the budget's tokens, steps and
    FLOPs, from the model's config.json alone; says whether it fits and which knob would make it."""
    from uptrain.config import load_config
    from uptrain.errors import UptrainError
    from uptrain.pipeline.planning import describe_plan, make_plan, parse_memory, plan_record

    cfg = load_config(config, overrides or [])
    if accelerate_config is not None and not accelerate_config.is_file():
        raise UptrainError(f"--accelerate-config {accelerate_config} does not exist; see configs/accelerate/")
    memory = parse_memory(device_memory) if device_memory else None
    plan = make_plan(cfg, accelerate_config, memory)
    if as_json:
        typer.echo(json.dumps(plan_record(plan), indent=2))
        return
    for line in describe_plan(plan, tflops, mfu):
        typer.echo(line)
