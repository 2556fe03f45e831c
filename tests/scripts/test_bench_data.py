"""The input-pipeline benchmarks (scripts/bench_data.py, scripts/bench_stream_resume.py) run end to end at
miniature size and write sane JSON. No timing is asserted; bench_stream_resume checks itself that the
skipping resume and the saved position give the same first batch."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import subprocess_env

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--megabytes", "0.1", "--seq-len", "64", "--batch", "4", "--buffer", "16"]


@pytest.mark.parametrize(
    ("name", "more"), [("data", ["--batches", "20"]), ("stream_resume", ["--deep", "0.5"])]
)
def test_the_data_benchmarks_write_sane_json(tmp_path, name, more):
    out = tmp_path / f"{name}.json"
    cmd = [sys.executable, str(ROOT / "scripts" / f"bench_{name}.py"), *TINY, *more]
    cmd += ["--work", str(tmp_path), "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["benchmark"] == name and data["figures"]
    for f in data["figures"]:
        assert isinstance(f["value"], (int, float)) and math.isfinite(f["value"]) and f["value"] > 0, f
