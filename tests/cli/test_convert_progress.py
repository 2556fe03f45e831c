"""`uptrain convert` reports progress: off a terminal (a log, CI), one line per finished output shard."""

from __future__ import annotations

import json
import re

from cli_helpers import run_cli
from tiny_models import build_tiny


def test_one_line_per_output_shard_with_bytes_and_tensors(tmp_path):
    src = build_tiny("llama", tmp_path / "src", kv_heads=8, max_shard_size="40KB")
    out = tmp_path / "out"
    r = run_cli("convert", src, out, "-g", "2")
    assert r.exit_code == 0, r.output
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    lines = [line for line in r.output.splitlines() if line.startswith("wrote model-")]
    assert sorted(re.match(r"wrote (\S+):", line).group(1) for line in lines) == shards
    tensors = len(index["weight_map"])
    last = lines[-1]  # the shard written last completes the conversion
    assert f"{tensors}/{tensors} tensors" in last, last
