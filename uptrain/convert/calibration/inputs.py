"""What to calibrate on: the spec (text, token count, sequence length), its token ids, the source model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from uptrain.checkpoint.devices import device_name, resolve_compute_dtype
from uptrain.config import BUILTIN_PREFIX
from uptrain.config.conversion import ConvertSection
from uptrain.convert.calibration.stats import BATCH_TOKENS
from uptrain.data import TextSource, builtin_text, join_documents, load_documents
from uptrain.errors import SettingError

DEFAULT_CALIBRATION = TextSource(split="train")  # WikiText-2 raw, train split


@dataclass(frozen=True)
class CalibrationSpec:
    """A calibration pass, as the calibration_* settings (uptrain.config.conversion, where their
    defaults are) and the method ask for it."""

    data: TextSource
    tokens: int  # tokens whose statistics are accumulated
    seq_len: int  # calibration text is cut into sequences of this many tokens
    skip_tokens: int = 0  # the first tokens of the text that calibration leaves out
    keep_tokens: int = 0  # of those, how many tokens of attention inputs are kept for `refine`
    keep_batch_tokens: int = BATCH_TOKENS  # kept inputs come in batches of about this many (a refine step)
    sequential: bool = False  # calibrate each layer on the partly converted model's inputs (layerwise.py)
    device: str = "cpu"  # where the source runs (resolved: uptrain.checkpoint.devices)
    dtype: str = "fp32"  # its compute dtype: fp32, bf16 or fp16

    def record(self) -> dict[str, Any]:
        return {
            "data": self.data.describe(),
            "tokens": self.tokens,
            "seq_len": self.seq_len,
            "sequential": self.sequential,
            "device": self.device,
            "dtype": self.dtype,
            **({"skip_tokens": self.skip_tokens} if self.skip_tokens else {}),
        }


def calibration_spec(settings: ConvertSection, device: torch.device) -> CalibrationSpec:
    """The CalibrationSpec of a conversion's calibration_* settings, run on `device` (resolved);
    data None is the default text."""
    if settings.calibration_tokens < 1 or settings.calibration_seq_len < 2:
        raise SettingError("<calibration_tokens> must be at least 1 and <calibration_seq_len> at least 2")
    if settings.calibration_skip_tokens < 0:
        raise SettingError("<calibration_skip_tokens> must be 0 or more")
    split, column = settings.calibration_split, settings.calibration_text_column
    if settings.calibration_data is None:
        config = settings.calibration_config or DEFAULT_CALIBRATION.config
        source = TextSource(DEFAULT_CALIBRATION.dataset, config, split, column)
    else:
        source = TextSource(settings.calibration_data, settings.calibration_config, split, column)
    return CalibrationSpec(
        source,
        settings.calibration_tokens,
        settings.calibration_seq_len,
        skip_tokens=settings.calibration_skip_tokens,
        sequential=settings.sequential,
        device=device_name(device),
        dtype=resolve_compute_dtype(settings.calibration_dtype, device),
    )


# data.py names a text's settings as eval does; calibration calls them calibration_*
_FIELDS = {
    "dataset": "calibration_data",
    "dataset_config": "calibration_config",
    "split": "calibration_split",
    "text_column": "calibration_text_column",
}


def _load_documents(data: TextSource) -> list[str]:
    """load_documents (a builtin: text is one document), its errors naming the calibration_* settings."""
    if data.dataset.startswith(BUILTIN_PREFIX):
        return [builtin_text(data.dataset[len(BUILTIN_PREFIX) :])]
    try:
        return load_documents(data)
    except SettingError as exc:
        raise exc.renamed(_FIELDS) from None


def calibration_token_ids(tokenizer: Any, data: TextSource, tokens: int, skip: int = 0) -> torch.Tensor:
    """`tokens` tokens of the documents joined (no special tokens added), after the first `skip`."""
    documents = _load_documents(data)
    taken, chars = [], 0
    for doc in documents:  # tokenize only about as much text as needed (~4 characters a token)
        taken.append(doc)
        chars += len(doc)
        if chars > 8 * (tokens + skip):
            break
    text = join_documents(taken)
    if skip:  # a long single document (a builtin text): only its first part
        text = text[: 8 * (tokens + skip)]
    ids = tokenizer(text, add_special_tokens=False).input_ids
    return torch.tensor(ids[skip : skip + tokens], dtype=torch.long)
