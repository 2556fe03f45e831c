"""`uptrain eval`: several checkpoints scored on exactly the same tokens, one table."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from uptrain.cli import app
from uptrain.errors import UptrainError


def _check_output(path: Path | None, flag: str) -> None:
    if path is not None and path.is_dir():
        raise UptrainError(f"{flag} {path} is a directory; name a file in it, e.g. {path / 'report'}")
    if path is not None and not path.parent.is_dir():
        raise UptrainError(f"{flag} {path}: the folder {path.parent} does not exist; create it first")


@app.command("eval")
def eval_command(
    models: list[str] = typer.Argument(
        ...,
        help="Checkpoints to compare: model directories, .gguf files or Hub ids. The first is the baseline.",
    ),
    dataset: str = typer.Option(
        "Salesforce/wikitext",
        help="Hub dataset id, a dataset folder, or a local .txt/.json/.jsonl/.parquet file.",
    ),
    dataset_config: str = typer.Option(
        None, help="Dataset config (default: wikitext-2-raw-v1 for the default dataset)."
    ),
    split: str = typer.Option("test", help="Dataset split."),
    text_column: str = typer.Option("text", help="Column holding the text."),
    max_tokens: int = typer.Option(None, help="Score only the first N tokens of the joined text."),
    window: int = typer.Option(None, help="Window in tokens (default: min(max positions, 2048))."),
    stride: int = typer.Option(None, help="Stride in tokens (default: window / 2)."),
    batch_size: int = typer.Option(4, help="Windows per forward pass."),
    dtype: str = typer.Option("auto", help="auto (the checkpoint's), bf16, fp16 or fp32."),
    device: str = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: cuda when available)."),
    tokenizer: str = typer.Option(
        None, help="Tokenizer directory for all models (default: each model's own)."
    ),
    harness: bool = typer.Option(
        True, "--harness/--no-harness", help="Also word/byte perplexity as lm_eval (each document alone)."
    ),
    detokenize: str = typer.Option(
        "none", help="none, or wikitext: score lm_eval's wikitext-detokenized documents (--harness)."
    ),
    tasks: str = typer.Option(
        None, help="lm_eval tasks, comma-separated (hellaswag,arc_easy,...); needs uptrain-gqa[eval]."
    ),
    num_fewshot: int = typer.Option(None, help="Few-shot examples for --tasks (default: each task's own)."),
    limit: float = typer.Option(None, help="Examples per task for --tasks (a fraction when below 1)."),
    include_path: Path = typer.Option(None, help="Folder of extra lm_eval task YAML files for --tasks."),
    kv_batch: int = typer.Option(1, help="Batch for the KV-cache size and the decode benchmark."),
    kv_context: int = typer.Option(2048, help="Context for the KV-cache size and the decode benchmark."),
    decode_bench: bool = typer.Option(
        False, "--decode-bench", help="Measure decode tokens/s with the KV cache."
    ),
    decode_tokens: int = typer.Option(32, help="Tokens generated per sequence by --decode-bench."),
    json_path: Path = typer.Option(None, "--json", help="Write the report as JSON to this file."),
    markdown_path: Path = typer.Option(None, "--markdown", help="Write the table as Markdown to this file."),
    allow_pickle: bool = typer.Option(
        False, "--allow-pickle", help="Load pickled .bin weights (trusted only)."
    ),
    trust_remote_code: bool = typer.Option(
        False, "--trust-remote-code", help="Run a checkpoint's own Python code (auto_map; trusted only)."
    ),
) -> None:
    """Perplexity of each MODEL on the same tokens, and what fewer KV heads buy (cache size, decode speed)."""
    import datasets
    from transformers.utils import logging as hf_logging

    from uptrain.checkpoint.atomic import atomic_write_text
    from uptrain.checkpoint.dtypes import resolve_dtype
    from uptrain.data import DEFAULT_CONFIG, DEFAULT_DATASET, TextSource, load_documents
    from uptrain.evaluate import EvalSettings, evaluate_checkpoints, report_table, resolve_checkpoint
    from uptrain.evaluate.documents import check_treatment
    from uptrain.evaluate.report import check_device
    from uptrain.evaluate.table import caption, title, to_markdown
    from uptrain.evaluate.tasks import TaskSettings, check_tasks, parse_tasks

    console = Console()
    if not console.is_terminal:  # piped or captured: no reason to fold the table at 80 columns
        console = Console(width=max(console.width, 160))
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    _check_output(json_path, "--json")
    _check_output(markdown_path, "--markdown")
    resolve_dtype(dtype)
    check_device(device)
    check_treatment(detokenize)
    if include_path is not None and not include_path.is_dir():
        raise UptrainError(f"--include-path {include_path} is not a folder; name the folder of task YAML")
    task_names = parse_tasks(tasks)
    include = str(include_path) if include_path is not None else None
    check_tasks(TaskSettings(task_names, num_fewshot, limit, batch_size, include))
    if dataset_config is None and dataset == DEFAULT_DATASET:
        dataset_config = DEFAULT_CONFIG
    checkpoints = [resolve_checkpoint(m, allow_pickle, trust_remote_code) for m in models]
    source = TextSource(dataset, dataset_config, split, text_column)
    documents = load_documents(source)
    shared_tokenizer = None
    if tokenizer is not None:
        from uptrain.checkpoint.loading import load_tokenizer

        shared_tokenizer = load_tokenizer(tokenizer, trust_remote_code)
    settings = EvalSettings(
        window=window,
        stride=stride,
        batch_size=batch_size,
        max_tokens=max_tokens,
        dtype=dtype,
        device=device,
        harness=harness,
        kv_batch=kv_batch,
        kv_context=kv_context,
        decode_bench=decode_bench,
        decode_tokens=decode_tokens,
        detokenize=detokenize,
        tasks=task_names,
        num_fewshot=num_fewshot,
        limit=limit,
        include_path=include,
    )

    local_file = source.is_local and not source.is_local_folder
    described = {
        "dataset": dataset,
        "dataset_config": None if local_file else dataset_config,
        "split": None if local_file else split,
        "text_column": text_column,
        "source": source.describe(),
        "max_tokens": max_tokens,
    }
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

        report = evaluate_checkpoints(
            checkpoints, documents, settings, described, tokenizer=shared_tokenizer, progress=progress
        )
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
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(report.to_dict(), indent=2) + "\n")
        console.print(f"wrote {json_path}")
    if markdown_path is not None:
        atomic_write_text(markdown_path, to_markdown(report))
        console.print(f"wrote {markdown_path}")
