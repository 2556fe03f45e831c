"""A GGUF file read one tensor at a time, as transformers' own GGUF loader would read it.

transformers (5.x) dequantizes a GGUF of a dense architecture in `load_gguf_checkpoint`: every tensor
is dequantized with gguf.dequantize, passed through the architecture's TensorProcessor (Llama's Q/K
un-permutation, Gemma's norm offset, Bloom's QKV layout...), renamed with `get_gguf_hf_weights_map`,
cast to the dtype asked for, then renamed by the model's own conversion mapping and cast to its
parameter's dtype by the state-dict loader. GGUFShard does exactly those steps, with those functions,
for one tensor when it is asked for, from the file the gguf package memory-maps, so resident memory
stays near one tensor. `plan_gguf_shard` declines (returns None) wherever transformers' loading does
more than map one file tensor to one parameter (mixture-of-experts merges, GPT-2's head, the
architectures of transformers' newer GGUF path, keep-in-fp32 modules, weights the file lacks); those
files are loaded whole by transformers, as before.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from uptrain.checkpoint.shards import TensorMeta
from uptrain.errors import UptrainError

# transformers' GGUF tensor processors whose process() maps one tensor to one tensor, under its own
# name, and writes nothing else (the others merge experts or store tensors themselves)
ONE_TO_ONE_PROCESSORS = frozenset(
    {
        "TensorProcessor",
        "LlamaTensorProcessor",
        "BloomTensorProcessor",
        "MambaTensorProcessor",
        "NemotronTensorProcessor",
        "Gemma2TensorProcessor",
    }
)
_CHUNK_BYTES = 1 << 24  # quantized bytes dequantized at a time: bounds gguf's temporaries


class GGUFShard:
    """The weights of one GGUF file, each dequantized when loaded; names, dtypes and shapes are
    those of `unique_tensors(model.state_dict())` after transformers' from_pretrained(gguf_file=)."""

    def __init__(self, plan: GGUFPlan, label: str) -> None:
        self.plan = plan
        self.label = label

    def names(self) -> list[str]:
        return list(self.plan.metas)

    def meta(self, name: str) -> TensorMeta:
        return self.plan.metas[name]

    def load(self, name: str) -> torch.Tensor:
        plan, meta = self.plan, self.plan.metas[name]
        source = plan.sources[name]
        result = plan.processor.process(
            weights=dequantize_tensor(source),
            name=source.name,
            tensor_key_mapping=plan.to_hf,
            parsed_parameters={"tensors": {}},
        )
        weights = result.weights
        if not (weights.flags.writeable and weights.flags.c_contiguous):
            weights = np.copy(weights)  # transformers copies every tensor; ours are fresh already
        tensor = torch.from_numpy(weights).to(plan.load_dtype).to(meta.dtype)
        if tuple(tensor.shape) != meta.shape:
            raise UptrainError(
                f"{self.label}: tensor {source.name} has shape {tuple(tensor.shape)}, but the model's "
                f"{name} is {meta.shape}; the file does not match its own metadata"
            )
        return tensor


class GGUFPlan:
    """Which file tensor each parameter comes from, and how transformers processes it."""

    def __init__(
        self,
        processor: Any,
        to_hf: dict[str, str],
        sources: dict[str, Any],
        metas: dict[str, TensorMeta],
        load_dtype: torch.dtype,
    ) -> None:
        self.processor = processor  # transformers' TensorProcessor for the architecture
        self.to_hf = to_hf  # GGUF tensor name -> transformers name, as get_gguf_hf_weights_map gives
        self.sources = sources  # parameter name -> the gguf ReaderTensor (memory-mapped)
        self.metas = metas  # parameter name -> dtype and shape, in state_dict order
        self.load_dtype = load_dtype  # the dtype asked for, which load_gguf_checkpoint casts to


def dequantize_tensor(tensor: Any) -> np.ndarray:
    """gguf.dequantize of one ReaderTensor, a block of rows at a time (blocks never cross rows, so
    the values are the same) so that gguf's temporaries stay small beside the float32 result."""
    from gguf import dequantize

    data = tensor.data
    if data.ndim < 2 or data.nbytes <= _CHUNK_BYTES:
        return dequantize(data, tensor.tensor_type)
    rows = max(1, _CHUNK_BYTES // (data.nbytes // data.shape[0]))
    first = dequantize(data[:rows], tensor.tensor_type)
    out = np.empty((data.shape[0], *first.shape[1:]), dtype=first.dtype)
    out[:rows] = first
    for start in range(rows, data.shape[0], rows):
        out[start : start + rows] = dequantize(data[start : start + rows], tensor.tensor_type)
    return out


def _newer_path(architecture: str) -> bool:
    """Whether transformers loads this architecture through its newer GGUF path (weight converters
    in the state-dict loader, since 5.x) rather than load_gguf_checkpoint."""
    try:
        from transformers.integrations.gguf import is_gguf_arch_supported
    except ImportError:  # a transformers without that path
        return False
    return is_gguf_arch_supported(architecture)


def _processor(architecture: str, config: dict) -> Any:
    """transformers' TensorProcessor for the architecture, given the config dict its GGUF reader
    parsed; None for one that builds tensors from several."""
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor

    processor_class = TENSOR_PROCESSORS.get(architecture, TensorProcessor)
    if processor_class.__name__ not in ONE_TO_ONE_PROCESSORS:
        return None
    return processor_class(config=config)


def _loaded_names(model: Any, to_hf: dict[str, str], reader: Any) -> dict[str, Any] | None:
    """Parameter name -> file tensor, through the renaming transformers' state-dict loader applies;
    None where that loader would convert (merge, split, reshape) rather than only rename."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

    mapping = get_model_conversion_mapping(model)
    renamings = [m for m in mapping if isinstance(m, WeightRenaming)]
    converters = [m for m in mapping if isinstance(m, WeightConverter)]
    meta_state = model.state_dict()
    prefix = model.base_model_prefix
    sources: dict[str, Any] = {}
    for tensor in reader.tensors:
        if tensor.name not in to_hf:
            continue  # load_gguf_checkpoint skips it too
        key = to_hf[tensor.name]
        name, pattern = rename_source_key(key, renamings, converters, prefix, meta_state)
        if name not in meta_state and key in meta_state:
            name, pattern = rename_source_key(key, [], [], prefix, meta_state)
        if pattern is not None or name in sources:
            return None
        if name in meta_state:
            sources[name] = tensor
    return sources


def _unique_metas(model: Any, sources: dict[str, Any]) -> dict[str, TensorMeta] | None:
    """dtype and shape of each parameter unique_tensors keeps (a tied one is the same Parameter as
    the one it is tied to); None unless the file gives every one of them and none of the tied."""
    metas: dict[str, TensorMeta] = {}
    seen: set[int] = set()
    for name, param in model.state_dict(keep_vars=True).items():
        if id(param) in seen:
            if name in sources:
                return None
            continue
        seen.add(id(param))
        if name not in sources:
            return None  # transformers would initialize it, or tie it the other way round
        metas[name] = TensorMeta(param.dtype, tuple(param.shape))
    return metas


def plan_gguf_shard(path: str, model: Any, load_dtype: torch.dtype) -> GGUFPlan | None:
    """How to read `path` tensor by tensor into `model` (built on the meta device from the file's
    config at `load_dtype`), or None where only transformers' whole-model loading is exact."""
    from gguf import GGUFReader
    from transformers.modeling_gguf_pytorch_utils import (
        get_gguf_hf_weights_map,
        load_gguf_checkpoint,
        read_field,
    )

    if model._get_dtype_plan(load_dtype):
        return None
    config = load_gguf_checkpoint(path, return_tensors=False)["config"]  # the dict processors read
    reader = GGUFReader(path)  # parsed after the line above has freed its own: one at a time
    architecture = read_field(reader, "general.architecture")[0]
    processor = None if _newer_path(architecture) else _processor(architecture, config)
    if processor is None:
        return None
    to_hf = get_gguf_hf_weights_map(model, processor)
    sources = _loaded_names(model, to_hf, reader)
    metas = None if sources is None else _unique_metas(model, sources)
    if metas is None:
        return None
    return GGUFPlan(processor, to_hf, {n: sources[n] for n in metas}, metas, load_dtype)
