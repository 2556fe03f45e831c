"""Tiny GGUF files written with the gguf package from tiny random transformers models: tensor names
from gguf's own name map (as llama.cpp's converter names them), matrices quantized to Q8_0 (or F16,
alternately), vectors in F32. The values need not be a faithful export: the tests read the same
file with transformers and with uptrain and compare."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _write_metadata(writer, arch: str, config) -> None:
    ints = {
        "context_length": config.max_position_embeddings,
        "block_count": config.num_hidden_layers,
        "feed_forward_length": config.intermediate_size,
        "embedding_length": config.hidden_size,
        "attention.head_count": config.num_attention_heads,
        "attention.head_count_kv": config.num_key_value_heads,
        "attention.key_length": config.head_dim,
        "attention.value_length": config.head_dim,
        "rope.dimension_count": config.head_dim,
        "vocab_size": config.vocab_size,
    }
    for key, value in ints.items():
        writer.add_uint32(f"{arch}.{key}", value)
    writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)
    writer.add_float32(f"{arch}.rope.freq_base", 10000.0)
    writer.add_string("general.name", f"tiny {arch}")


def _encoded(array: np.ndarray, index: int):
    """(data, ggml type) for one tensor: matrices Q8_0 or F16 in turn, the rest F32."""
    from gguf import GGMLQuantizationType, quants

    if array.ndim == 2 and array.shape[-1] % 32 == 0:
        if index % 2:
            return array.astype(np.float16), GGMLQuantizationType.F16
        return quants.quantize(array, GGMLQuantizationType.Q8_0), GGMLQuantizationType.Q8_0
    return array, GGMLQuantizationType.F32


def write_tiny_gguf(
    path: Path, model_type: str, arch: str | None = None, drop: tuple[str, ...] = (), **config_extra
) -> Path:
    """A GGUF of a tiny random `model_type` (see tiny_models.tiny_config), written to `path`, without
    the tensors named in `drop`."""
    import torch
    from gguf import MODEL_ARCH_NAMES, GGUFWriter, get_tensor_name_map
    from tiny_models import tiny_config
    from transformers import AutoModelForCausalLM

    arch = arch or model_type
    config = tiny_config(model_type, **config_extra)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    arch_id = next(k for k, v in MODEL_ARCH_NAMES.items() if v == arch)
    names = get_tensor_name_map(arch_id, config.num_hidden_layers)
    writer = GGUFWriter(str(path), arch)
    _write_metadata(writer, arch, config)
    state = model.state_dict()
    for index, (name, tensor) in enumerate(state.items()):
        if name in drop or (name == "lm_head.weight" and config.tie_word_embeddings):
            continue
        base, suffix = name.rsplit(".", 1)
        data, ggml_type = _encoded(tensor.detach().float().numpy(), index)
        writer.add_tensor(f"{names.get_name(base)}.{suffix}", data, raw_dtype=ggml_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
