"""What to calibrate on: the spec (text, token count, sequence length), its token ids, the source model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from uptrain.checkpoint.devices import COMPUTE_DTYPES
from uptrain.checkpoint.loading import load_causal_lm
from uptrain.checkpoint.shards import SafetensorsShard, SourceCheckpoint
from uptrain.config import BUILTIN_PREFIX
from uptrain.data import TextSource, builtin_text, join_documents, load_documents
from uptrain.errors import SettingError

DEFAULT_CALIBRATION = TextSource(split="train")  # WikiText-2 raw, train split


@dataclass(frozen=True)
class CalibrationSpec:
    data: TextSource = DEFAULT_CALIBRATION
    tokens: int = 4096  # tokens whose statistics are accumulated
    seq_len: int = 512  # calibration text is cut into sequences of this many tokens
    skip_tokens: int = 0  # the first tokens of the text that calibration leaves out
    keep_tokens: int = 0  # of those, how many tokens of attention inputs are kept for `refine`
    keep_batch_tokens: int = 512  # kept inputs come in batches of about this many tokens (a refine step)
    sequential: bool = False  # calibrate each layer on the partly converted model's inputs (sequential.py)
    device: str = "cpu"  # where the source runs (checked: uptrain.checkpoint.devices)
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


def calibration_spec(
    data: str | None = None,
    config: str | None = None,
    split: str = "train",
    text_column: str = "text",
    tokens: int = 4096,
    seq_len: int = 512,
    sequential: bool = False,
    skip_tokens: int = 0,
    device: str = "cpu",
    dtype: str = "fp32",
) -> CalibrationSpec:
    """A CalibrationSpec from the calibration_* settings (data None: the default)."""
    if tokens < 1 or seq_len < 2:
        raise SettingError("<calibration_tokens> must be at least 1 and <calibration_seq_len> at least 2")
    if skip_tokens < 0:
        raise SettingError("<calibration_skip_tokens> must be 0 or more")
    if data is None:
        source = TextSource(
            DEFAULT_CALIBRATION.dataset, config or DEFAULT_CALIBRATION.config, split, text_column
        )
    else:
        source = TextSource(data, config, split, text_column)
    return CalibrationSpec(
        source, tokens, seq_len, sequential=sequential, skip_tokens=skip_tokens, device=device, dtype=dtype
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


def load_source_model(source: SourceCheckpoint, device: str = "cpu", dtype: str = "fp32") -> Any:
    """The source as a transformers model on `device` in `dtype` (fp32, bf16 or fp16). Weights that
    uptrain reads itself, not from safetensors (a GGUF file, dequantized as transformers does; pickled
    .bin, which the user allowed, read with weights_only) are passed in as a state dict, so
    transformers never unpickles anything itself."""
    torch_dtype = COMPUTE_DTYPES[dtype]
    if not all(isinstance(s, SafetensorsShard) for s in source.shards):
        from transformers import AutoConfig
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

        config = AutoConfig.from_pretrained(str(source.root))
        state = {name: source.load(name).to(torch_dtype) for name in source.names()}
        model_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
        model = model_class.from_pretrained(None, config=config, state_dict=state, dtype=torch_dtype)
        model.to(device)
    else:
        model = load_causal_lm(source.model_path, dtype=torch_dtype, device=device)
    return model.eval()
