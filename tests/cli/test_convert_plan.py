"""`uptrain convert --plan`: it prints (or, with --json, records) the plan and touches nothing; its
mistakes are one line each; and its host peak is the peak RSS that the conversion then measures."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli, subprocess_env
from method_helpers import save_char_tokenizer

from scripts.make_synthetic_checkpoint import write_checkpoint

SHAPE = dict(layers=4, hidden=1024, heads=16, kv_heads=16, intermediate=2816, vocab=8000, shards=2)
# Runs its arguments as a child and prints the child's peak RSS. A child's ru_maxrss starts at its
# parent's own peak (fork copies the mark), so the converting process is a child of this small
# process, not of pytest.
PEAK_RSS = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
)


def _listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_plan_prints_the_phases_and_writes_nothing(tiny_llama, tmp_path):
    before = _listing(tiny_llama.parent)
    r = run_cli("convert", tiny_llama, tmp_path / "out", "-g", "2", "--method", "fit+refine", "--plan")
    assert r.exit_code == 0, r.output
    for fragment in ("peak host RAM", "kept by the allocator", "FLOPs a layer", "GFLOP/s", "expected time"):
        assert fragment in r.output, r.output
    assert _listing(tiny_llama.parent) == before and not (tmp_path / "out").exists()


def test_plan_json_adds_up(tiny_llama):
    r = run_cli("convert", tiny_llama, "-g", "2", "--method", "similar+fit+refine", "--plan", "--json")
    assert r.exit_code == 0, r.output
    plan = json.loads(r.output)
    host = plan["memory"]["host RAM"]
    assert set(host["phases"]) == {"capture", "calibrate", "merge", "refine", "write"}
    largest = max(p["bytes"] for p in host["phases"].values())
    assert host["peak_bytes"] == sum(host["baseline"].values()) + largest
    assert host["phases"][host["peak_phase"]]["bytes"] == largest
    flops = plan["flops_per_layer"]
    assert flops["merge"] > 0 and flops["refine"] > 0 and plan["flops"] == flops["total"] * 2
    assert plan["seconds"] == pytest.approx(2 * plan["seconds_per_layer"])


def test_plan_of_an_uncalibrated_method_is_the_stream(tiny_llama):
    r = run_cli("convert", tiny_llama, "-g", "2", "--plan", "--json")
    assert r.exit_code == 0, r.output
    plan = json.loads(r.output)
    host = plan["memory"]["host RAM"]
    assert not plan["calibrated"] and list(host["phases"]) == ["write"] and "flops" not in plan
    largest = plan["shape"]["largest_tensor"] * plan["shape"]["source_bytes"]
    assert host["phases"]["write"]["bytes"] == largest  # float32 in, float32 out: one copy


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["OUT", "--json"], "--json prints the plan"),
        (["OUT", "--plan", "--verify"], "--verify checks a written OUT"),
        ([], "OUT is missing"),
        (["--plan", "-g", "3"], "--groups 3 is invalid"),
        (["--plan", "--gguf-file", "m.gguf"], "a .gguf file has none"),
    ],
)
def test_plan_mistakes_are_one_line(tiny_llama, tmp_path, args, fragment):
    args = [str(tmp_path / "out") if a == "OUT" else a for a in args]
    groups = [] if "-g" in args else ["-g", "2"]
    r = run_cli("convert", tiny_llama, *args, *groups)
    assert_one_line_error(r, fragment)
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A 4-layer Llama of hidden 1024 (bf16, 0.14 GB), a character tokenizer and a text to calibrate on."""
    root = tmp_path_factory.mktemp("plan-rss")
    write_checkpoint(root / "src", **SHAPE, dtype=torch.bfloat16)
    save_char_tokenizer(root / "src")  # ids < 96 <= the vocabulary
    words = ["the", "model", "layer", "attention", "head", "key", "value", "query", "token", "group"]
    lines = [" ".join(words[(i * 7 + j) % len(words)] for j in range(11)) + "." for i in range(400)]
    (root / "text.txt").write_text("\n".join(lines))
    return root


@pytest.mark.slow
def test_plan_peak_is_the_measured_peak_rss(synthetic):
    """`--plan --json` in a fresh process, as a user runs it, then the conversion it plans, under
    PEAK_RSS. About 30 s on 2 busy cores."""
    src, out = synthetic / "src", synthetic / "out"
    args = ["-g", "4", "--method", "fit", "--calibration-data", str(synthetic / "text.txt")]
    args += ["--calibration-tokens", "512"]
    command = [sys.executable, "-m", "uptrain", "convert", str(src)]
    env = subprocess_env()
    done = subprocess.run([*command, *args, "--plan", "--json"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    host = json.loads(done.stdout)["memory"]["host RAM"]
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, *command, str(out), *args], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    measured = int(done.stdout.split()[-1]) * 1024  # ru_maxrss is in KiB on Linux
    planned, baseline = host["peak_bytes"], sum(host["baseline"].values())
    # The plan counts what the walk allocates. What it cannot count: fragmentation, which raises the
    # peak layer by layer (+3-6% over four layers here), the 80 MiB it assumes for the tokenizer and
    # the text (75-85 MiB measured here), and modules only the conversion imports. Measured on this
    # shape: plan 850 MiB, peak RSS 895-925 MiB (-5% to -8%); at hidden 2048 the plan was 3% over.
    # +-25% leaves room for another torch or glibc. This is the figure a user reads, but the process
    # is two thirds of it at this shape, so it says little about the terms; the next check does.
    assert 0.75 * measured < planned < 1.25 * measured, (planned, measured)
    # What the plan puts above the process (295 MiB here) against what the conversion held above that
    # baseline (about 356 MiB; ratio 0.83, and 1.05 at hidden 2048): +-35%. A plan without the
    # allocator's kept blocks, or without the merge's workspace, puts 175 MiB above it and fails.
    above, held = planned - baseline, measured - baseline
    assert 0.65 * held < above < 1.35 * held, (above, held)
