"""Text data through the `datasets` library, shared by evaluation, calibration and training.

A TextSource names a Hub dataset (id, config, split), a local dataset folder (a downloaded Hub
dataset repository: its README's configs and its split files, read with the same config and split),
or a local file (.txt, .json/.jsonl, .parquet). A local .txt file is one document, read as it is
(datasets' text loader, sample_by="document").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uptrain.errors import SettingError, UptrainError

DEFAULT_DATASET = "Salesforce/wikitext"
DEFAULT_CONFIG = "wikitext-2-raw-v1"
DOCUMENT_SEPARATOR = "\n\n"  # as in the Hugging Face guide "Perplexity of fixed-length models"

_LOCAL_BUILDERS = {".txt": "text", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


@dataclass(frozen=True)
class TextSource:
    """Where text comes from. For a local file, `config` is ignored and `split` must be 'train'
    or left as given (datasets names a single local file's split 'train')."""

    dataset: str = DEFAULT_DATASET
    config: str | None = DEFAULT_CONFIG
    split: str = "test"
    text_column: str = "text"
    streaming: bool = False

    @property
    def is_local(self) -> bool:
        return Path(self.dataset).suffix.lower() in _LOCAL_BUILDERS or Path(self.dataset).exists()

    @property
    def is_local_folder(self) -> bool:
        return Path(self.dataset).is_dir()

    def describe(self) -> str:
        if self.is_local and not self.is_local_folder:
            return self.dataset
        return f"{self.dataset}" + (f"/{self.config}" if self.config else "") + f" [{self.split}]"


def load_text_dataset(source: TextSource) -> Any:
    """The datasets.Dataset (or IterableDataset when streaming) behind a TextSource, with its text
    column checked."""
    import datasets

    try:
        if source.is_local_folder:
            ds = datasets.load_dataset(
                source.dataset, source.config, split=source.split, streaming=source.streaming
            )
        elif source.is_local:
            path = Path(source.dataset)
            if not path.is_file():
                raise SettingError(f"dataset file {path} does not exist; check <dataset>")
            builder = _LOCAL_BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise UptrainError(
                    f"{path} is not a .txt, .json, .jsonl or .parquet file; convert it or pass a Hub id"
                )
            kwargs = {"sample_by": "document"} if builder == "text" else {}
            ds = datasets.load_dataset(
                builder, data_files=str(path), split="train", streaming=source.streaming, **kwargs
            )
        else:
            ds = datasets.load_dataset(
                source.dataset, source.config, split=source.split, streaming=source.streaming
            )
    except UptrainError:
        raise
    except ValueError as exc:  # unknown split or config
        first = str(exc).strip().splitlines()[0].rstrip(".")
        raise SettingError(
            f"cannot load {source.describe()}: {first}; check <dataset_config> and <split>"
        ) from None
    except (FileNotFoundError, ConnectionError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SettingError(
            f"cannot load dataset {source.describe()}: {first}; check the id or path, or pass a local "
            ".txt, .json, .jsonl or .parquet file (or a downloaded dataset folder) with <dataset>"
        ) from None
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds (DatasetNotFoundError, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SettingError(f"cannot load dataset {source.describe()}: {first}; check <dataset>") from None
    columns = ds.column_names if ds.column_names is not None else list(next(iter(ds)).keys())
    if source.text_column not in columns:
        raise SettingError(
            f"{source.describe()} has no column {source.text_column!r}; pass <text_column>, one of {columns}"
        )
    return ds


def load_documents(source: TextSource) -> list[str]:
    """Every document's text, in order."""
    ds = load_text_dataset(source)
    return [row[source.text_column] for row in ds] if source.streaming else list(ds[source.text_column])


def join_documents(documents: Iterable[str]) -> str:
    """One text from many documents, joined with a blank line, as the perplexity guide does."""
    text = DOCUMENT_SEPARATOR.join(documents)
    if not text.strip():
        raise SettingError("the text is empty; point <dataset> at a file or split with text in it")
    return text


BUILTIN_TEXTS = ("python-docs",)


def builtin_text(name: str) -> str:
    """The text of a built-in corpus (see BUILTIN_TEXTS)."""
    if name != "python-docs":
        raise UptrainError(f"there is no built-in text {name!r}; use one of {', '.join(BUILTIN_TEXTS)}")
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise UptrainError(
            "this Python has no pydoc_data (the documentation topics); point data.dataset at a text file"
        ) from None
    return "\n\n".join(topics[key].strip() for key in sorted(topics))
