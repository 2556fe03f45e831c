"""`uptrain push`: publish a checkpoint to the Hugging Face Hub with a generated model card."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from uptrain.cli import app

console = Console(highlight=False, soft_wrap=True)


@app.command()
def push(
    directory: Path = typer.Argument(..., help="Checkpoint directory (converted or uptrained)."),
    repo_id: str = typer.Argument(..., help="Hub model repo: OWNER/NAME, or NAME under your account."),
    private: bool = typer.Option(False, "--private", help="Create the repo private."),
    revision: str = typer.Option(None, "--revision", help="Branch to commit to (created if missing)."),
    commit_message: str = typer.Option(None, "--commit-message", help="Commit message."),
    create_pr: bool = typer.Option(False, "--create-pr", help="Open a pull request against main."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Write the card and list what would be uploaded; no network."
    ),
    report: Path = typer.Option(
        None, "--report", help="Evaluation report (report.json of run, or eval --json) for the card."
    ),
) -> None:
    """Write DIR/README.md (the model card) and upload the checkpoint to the Hub.

    Uploads the safetensors weights, config, generation config, tokenizer, card and uptrain.json;
    nothing else. The token comes from HF_TOKEN or `hf auth login`."""
    from uptrain.hub.push import push_checkpoint
    from uptrain.units import format_bytes

    if report is None and directory.name == "final" and (directory.parent / "report.json").is_file():
        report = directory.parent / "report.json"  # the layout of `uptrain run`
        console.print(f"card numbers from {report}")
    result = push_checkpoint(
        directory,
        repo_id,
        private=private,
        revision=revision,
        commit_message=commit_message,
        create_pr=create_pr,
        dry_run=dry_run,
        report=report,
    )
    for note in result.notes:
        console.print(note)
    if result.card_generated:
        console.print(f"wrote the model card {result.card}")
    width = max(len(name) for name, _ in result.files)
    verb = "would upload" if dry_run else "uploaded"
    target = f"{result.repo_id} ({'pull request' if create_pr else result.revision})"
    console.print(f"{verb} {len(result.files)} files, {format_bytes(result.total_bytes)}, to {target}:")
    for name, size in result.files:
        console.print(f"  {name:<{width}}  {size:>14,} B  {format_bytes(size):>10}")
    if dry_run:
        console.print("dry run: nothing was sent")
    elif result.pr_url:
        console.print(f"opened {result.pr_url}")
    else:
        console.print(f"committed {result.commit_url or result.repo_url}")
