"""Write a random checkpoint of any transformers model_type, from its config.json, straight to
safetensors shards without building the model (its tensor names and shapes come from the model
built on the meta device).

    python scripts/make_synthetic_family.py OUT --config scripts/synthetic_configs/pythia-1b.json \\
        --shards 4 --dtype fp16 --rename lm_head.weight=embed_out.weight

--rename gives a tensor the name its checkpoints use where transformers names it otherwise in memory
(gpt_neox's `embed_out`). Norm scales are 1 + noise, everything else N(0, 0.02); memory stays near
one shard.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def tensor_specs(config: dict) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every parameter, in the model's order, from a meta-device build."""
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = {k: v for k, v in config.items() if k not in ("model_type", "architectures", "torch_dtype")}
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(config["model_type"], **fields))
    return [(name, tuple(p.shape)) for name, p in model.named_parameters()]


def write_family_checkpoint(out: Path, config: dict, shards: int, dtype: torch.dtype, renames: dict) -> int:
    """Write config.json, the shards and their index; return the bytes of weights written."""
    out.mkdir(parents=True, exist_ok=True)
    specs = [(renames.get(n, n), s) for n, s in tensor_specs(config)]
    elem = torch.empty((), dtype=dtype).element_size()
    sizes = [torch.Size(s).numel() * elem for _, s in specs]
    total, target = sum(sizes), sum(sizes) / shards
    generator = torch.Generator().manual_seed(0)
    names = [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    weight_map, shard, acc, index = {}, {}, 0, 0
    for (name, shape), size in zip(specs, sizes, strict=True):
        if shard and acc + size > target * (index + 1) and index < shards - 1:
            save_file(shard, out / names[index], metadata={"format": "pt"})
            shard, index = {}, index + 1
        t = torch.randn(shape, generator=generator, dtype=torch.float32) * 0.02
        is_scale = len(shape) == 1 and name.endswith(".weight")  # a norm's scale
        shard[name] = (t + 1.0 if is_scale else t).to(dtype)
        weight_map[name] = names[index]
        acc += size
    save_file(shard, out / names[index], metadata={"format": "pt"})
    index_file = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index_file, indent=2))
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--config", type=Path, required=True, help="a config.json with model_type")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--dtype", choices=DTYPES, default="bf16")
    ap.add_argument("--rename", action="append", default=[], metavar="OLD=NEW")
    a = ap.parse_args()
    renames = dict(r.split("=", 1) for r in a.rename)
    config = json.loads(a.config.read_text())
    total = write_family_checkpoint(a.out, config, a.shards, DTYPES[a.dtype], renames)
    print(f"wrote {total / 1e9:.2f} GB in {a.shards} shards to {a.out}")


if __name__ == "__main__":
    main()
