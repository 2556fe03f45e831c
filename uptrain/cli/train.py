"""`uptrain train --config X.yaml`."""

from __future__ import annotations

from pathlib import Path

import typer

from uptrain.cli import app


@app.command("train")
def train_command(
    config: Path = typer.Option(
        ..., "--config", "-c", help="The YAML config (see configs/ and docs/config.md)."
    ),
    output: Path = typer.Option(
        None, "--output", "-o", help="Output directory (default: the config's output)."
    ),
    overrides: list[str] = typer.Option(
        None, "--set", help="Override a config field, e.g. --set optim.lr=3e-4 (repeatable)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in the output."),
    print_config: bool = typer.Option(
        False, "--print-config", help="Print the resolved config (every field) and exit."
    ),
    trust_remote_code: bool = typer.Option(
        False,
        "--trust-remote-code",
        help="Run the checkpoint's own Python code (auto_map; trusted only): model.trust_remote_code.",
    ),
) -> None:
    """Uptrain a converted checkpoint on a compute budget (resumable; any Accelerate launcher)."""
    from uptrain.config import dump_config, load_config
    from uptrain.errors import UptrainError

    extra = ["model.trust_remote_code=true"] if trust_remote_code else []
    cfg = load_config(config, [*(overrides or []), *extra])
    if print_config:
        typer.echo(dump_config(cfg), nl=False)
        return
    out = output or (Path(cfg.output) if cfg.output else None)
    if out is None:
        raise UptrainError("no output directory; pass --output DIR or set output: in the config")
    cfg.output = str(out)

    from uptrain.pipeline.training import run_training

    run_training(cfg, out, resume=resume)
