"""scripts/gpu_check.py in its CPU miniature (--tiny), as CI runs it so that it cannot rot: every figure
it promises is there and sane, MFU follows its formula, and its docs section replaces itself. No GPU
figure is asserted: CI has no GPU."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import subprocess_env

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu-check")
    docs = tmp / "BENCHMARKS.md"
    docs.write_text("# Benchmarks\n\n<!-- notes -->\n## Notes\n\nkept\n")
    cmd = [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--tiny", "--peak-tflops", "0.001"]
    cmd += ["--work", str(tmp / "work"), "--out", str(tmp / "gpu_check.json"), "--docs", str(docs)]
    env = subprocess_env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((tmp / "gpu_check.json").read_text()), docs


@pytest.mark.slow
def test_the_miniature_reports_every_figure(tiny):
    data, _ = tiny
    figures = {f["name"]: f["value"] for f in data["figures"]}
    for name in (
        "uptrain / Trainer (tokens/s)",
        "uptrain train tokens/s",
        "uptrain MFU",
        "planned memory (uptrain plan)",
        "evaluator / bare forward (tokens/s)",
        "fit+refine conversion (4,096 tokens)",
        "conversion time / plan",
    ):
        assert isinstance(figures[name], float) and math.isfinite(figures[name]) and figures[name] > 0, name
    decode = [f for f in data["figures"] if f["name"].startswith("decode: ")]
    assert decode and all("KV bytes 8.0x smaller" in f["note"] for f in decode)  # 8 KV heads -> 1
    assert data["machine"]["device"] == "cpu"


@pytest.mark.slow
def test_mfu_is_six_n_tokens_per_second_over_the_peak(tiny):
    data, _ = tiny
    figures = {f["name"]: f["value"] for f in data["figures"]}
    # the miniature: 2 layers, hidden 64, 8 heads of 8 converted to 2 KV heads, MLP 64 * 8 // 3 = 170,
    # the byte-level tokenizer's vocabulary for the embeddings and the (untied) head
    from uptrain.checkpoint.offline import byte_level_tokenizer

    vocab = len(byte_level_tokenizer())
    layer = 2 * 64 * 64 + 2 * 64 * 16 + 3 * 64 * 170 + 2 * 64
    n = 2 * layer + 2 * vocab * 64 + 64
    assert data["settings"]["parameters"] == n
    expected = figures["uptrain train tokens/s"] * 6 * n / (0.001 * 1e12)
    assert figures["uptrain MFU"] == pytest.approx(expected, rel=1e-9)


@pytest.mark.slow
def test_the_docs_section_is_named_after_the_device_and_replaced_not_repeated(tiny):
    from gpu_check import write_section

    data, docs = tiny
    text = docs.read_text()
    assert text.count("## GPU check: cpu") == 1 and "kept" in text
    assert text.index("## Notes") < text.index("## GPU check: cpu")  # below the notes: regenerations keep it
    write_section(docs, "cpu", data)
    assert docs.read_text().count("## GPU check: cpu") == 1
    assert "| uptrain MFU |" in docs.read_text()
