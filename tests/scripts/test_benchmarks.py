"""The benchmark scripts run end to end at miniature size and write the JSON that BENCHMARKS.md is built
from. No timing is asserted: only that the fields are there and the values are sane."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import subprocess_env

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ("convert", "eval", "train", "decode")
FIELDS = ("benchmark", "title", "command", "machine", "versions", "load_average", "settings", "figures")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """bench_all.py --tiny once: the four scripts, their JSON, and the rendered page."""
    tmp = tmp_path_factory.mktemp("bench")
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_all.py"), "--tiny", "--threads", "1"]
    cmd += ["--docs", str(tmp / "docs"), "--work", str(tmp / "json"), "--scratch", str(tmp / "scratch")]
    done = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return tmp


def sane(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", BENCHMARKS)
def test_each_benchmark_writes_sane_json(tiny_run, name):
    data = json.loads((tiny_run / "json" / f"{name}.json").read_text())
    assert all(field in data for field in FIELDS)
    assert data["benchmark"] == name
    assert data["command"].startswith(f"python scripts/bench_{name}.py") and "--tiny" in data["command"]
    assert data["machine"]["cores"] >= 1 and data["machine"]["ram_gib"] > 0
    assert {"python", "torch", "transformers", "uptrain"} <= set(data["versions"])
    assert len(data["load_average"]["start"]) == 3
    assert data["figures"]
    for f in data["figures"]:
        assert sane(f["value"]), f
        assert f["met"] in (True, False, None)
        assert (f["target"] is None) == (f["met"] is None), f


@pytest.mark.slow
def test_convert_benchmark_checks_what_it_times(tiny_run):
    d = json.loads((tiny_run / "json" / "convert.json").read_text())["details"]
    assert d["naive_and_convert_agree_on_layer0_keys"] is True
    # a diagnostic: convert imports transformers since it measures the KV cache the installed
    # transformers keeps (on the meta device) and names the model class from its auto mapping
    assert d["transformers_imported_by_convert"] in (True, False)
    assert set(d["medians"]) == {"convert", "copy", "naive", "convert_no_fsync", "import"}
    shards = sorted((tiny_run / "scratch" / "convert").glob("source-tiny/*.safetensors"))
    assert shards == []  # the synthetic source is removed afterwards (no --keep-source)
    assert d["shards"] == 3 and 0 < d["largest_shard_bytes"] < d["checkpoint_bytes"]


@pytest.mark.slow
def test_decode_benchmark_kv_bytes_follow_the_formula(tiny_run):
    data = json.loads((tiny_run / "json" / "decode.json").read_text())
    points = data["details"]["pairs"]["miniature"]["points"]
    # miniature: 2 layers, 8 heads of head_dim 8, fp32; K and V for each cached position
    for row in points:
        kv = 8 if row["model"].startswith("8 KV") else 1
        assert row["kv_bytes"] == 2 * 2 * kv * 8 * 4 * row["batch"] * row["context"]
        assert sane(row["tokens_per_s"])
    assert len(data["figures"]) == len(points) // 2


@pytest.mark.slow
def test_train_benchmark_breaks_the_step_down(tiny_run):
    data = json.loads((tiny_run / "json" / "train.json").read_text())
    names = {f["name"] for f in data["figures"]}
    for phase in ("data", "forward", "backward", "optimizer"):
        assert f"uptrain step time: {phase}" in names


@pytest.mark.slow
def test_benchmarks_page_is_rendered_and_keeps_its_notes(tiny_run):
    docs = tiny_run / "docs"
    collected = json.loads((docs / "benchmarks.json").read_text())
    assert list(collected) == list(BENCHMARKS)
    page = (docs / "BENCHMARKS.md").read_text()
    for name in BENCHMARKS:
        assert f"## {name}: " in page
        assert collected[name]["command"] in page
    assert collected["convert"]["machine"]["cpu"] in page
    marker = "<!-- notes: everything below this line is kept when the file is regenerated -->"
    head, _ = page.split(marker)
    (docs / "BENCHMARKS.md").write_text(head + marker + "\nour own note\n")
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_all.py"), "--render", "--docs", str(docs)]
    subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), check=True, capture_output=True)
    again = (docs / "BENCHMARKS.md").read_text()
    assert again.endswith(marker + "\nour own note\n")
    assert "## decode: " in again


def test_fit_math_benchmark_writes_seconds_per_layer(tmp_path):
    """bench_fit_math.py --tiny times one small layer and writes one figure per hidden size."""
    out = tmp_path / "fit_math.json"
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_fit_math.py"), "--tiny", "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads(out.read_text())
    assert all(field in data for field in FIELDS) and data["benchmark"] == "fit_math"
    [fig] = data["figures"]
    assert fig["name"] == "fit math per layer, hidden 256" and sane(fig["value"]) and fig["unit"] == "s"
    assert data["details"]["per_size"]["256"]["heads"] == 2
