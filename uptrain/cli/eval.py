"""`uptrain eval`: several checkpoints scored on exactly the same tokens, one table.

Its options are generated from EvalCommand (uptrain/config/evaluation.py), which extends the scoring
settings a run config's `report:` section shares; every one is checked at the door, before any text
or model is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from uptrain.cli import app
from uptrain.cli.options import argument, from_options, with_options
from uptrain.config.evaluation import EvalCommand, EvalSettings, shared_fields
from uptrain.errors import UptrainError


@app.command("eval")
@with_options(EvalCommand)
def eval_command(models: list[str] = argument(EvalCommand, "models"), **options: Any) -> None:
    """Perplexity of each MODEL on the same tokens, and what fewer KV heads buy (cache size, decode speed)."""
    from uptrain.data import load_documents
    from uptrain.evaluate import resolve_checkpoint, score_checkpoints

    command = from_options(EvalCommand, options, models=models)
    settings = check_command(command)
    console = _console()
    _quiet_libraries()
    checkpoints = [resolve_checkpoint(m, command.allow_pickle, command.trust_remote_code) for m in models]
    documents = load_documents(command.text_source())
    tokenizer = None
    if command.tokenizer is not None:
        from uptrain.checkpoint.loading import load_tokenizer

        tokenizer = load_tokenizer(command.tokenizer, command.trust_remote_code)
    with _progress_bar(console) as progress:
        report = score_checkpoints(
            checkpoints, documents, settings, _described(command), tokenizer=tokenizer, progress=progress
        )
    _print_table(console, report)
    _write_files(console, command, report)


def check_command(command: EvalCommand) -> EvalSettings:
    """The door: the output files writable, and the scoring settings checked (check_settings), before
    any text or model is loaded. Returns the settings the library then trusts."""
    from uptrain.evaluate import check_settings

    for flag, name in (("--json", command.json), ("--markdown", command.markdown)):
        path = Path(name) if name is not None else None
        if path is not None and path.is_dir():
            raise UptrainError(f"{flag} {path} is a directory; name a file in it, e.g. {path / 'report'}")
        if path is not None and not path.parent.is_dir():
            raise UptrainError(f"{flag} {path}: the folder {path.parent} does not exist; create it first")
    return check_settings(EvalSettings(**shared_fields(command, EvalSettings)))


def _described(command: EvalCommand) -> dict[str, Any]:
    """What the text is, as the report records it."""
    source = command.text_source()
    local_file = source.is_local and not source.is_local_folder
    return {
        "dataset": command.dataset,
        "dataset_config": None if local_file else source.config,
        "split": None if local_file else command.split,
        "text_column": command.text_column,
        "source": source.describe(),
        "max_tokens": command.max_tokens,
    }


def _console() -> Console:
    console = Console()
    if not console.is_terminal:  # piped or captured: no reason to fold the table at 80 columns
        console = Console(width=max(console.width, 160))
    return console


def _quiet_libraries() -> None:
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


@contextmanager
def _progress_bar(console: Console) -> Iterator[Callable[[str, int, int], None]]:
    """A transient rich bar on stderr while a terminal watches, and the callback that moves it."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task("loading", total=None, detail="")

        def progress(stage: str, done: int, total: int) -> None:
            detail = f"{done:,}/{total:,} tokens" if total > 1 else ""
            bar.update(task, description=stage, completed=done, total=total, detail=detail)

        yield progress


def _print_table(console: Console, report: Any) -> None:
    from uptrain.evaluate import report_table
    from uptrain.evaluate.table import caption, title

    headers, rows = report_table(report)
    table = Table(title=title(report), caption=caption(report))
    for i, header in enumerate(headers):
        if i == 0:
            table.add_column(header, overflow="fold")
        else:
            table.add_column(header, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _write_files(console: Console, command: EvalCommand, report: Any) -> None:
    from uptrain.checkpoint.atomic import atomic_write_text
    from uptrain.evaluate.table import to_markdown

    if command.json is not None:
        atomic_write_text(Path(command.json), json.dumps(report.to_dict(), indent=2) + "\n")
        console.print(f"wrote {command.json}")
    if command.markdown is not None:
        atomic_write_text(Path(command.markdown), to_markdown(report))
        console.print(f"wrote {command.markdown}")
