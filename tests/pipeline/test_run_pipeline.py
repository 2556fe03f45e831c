"""uptrain run on configs/tiny-cpu.yaml (small budgets): the stages, the report checked against a plain
transformers computation, stage skipping on a rerun, resumption after SIGKILL, and push at the end."""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli
from train_runs import SMALL, TINY, quiet_env, reset_accelerate, sets

STAGES = ["convert", "evaluate-source", "evaluate-converted", "train", "evaluate-uptrained", "report"]
RUN = (*SMALL, "budget.max_steps=12", "eval.every_steps=4", "checkpoint.every_steps=4")
PLOTS = ("training.png", "perplexity.png", "kv_cache.png")


def run_in_process(out: Path, *assignments: str):
    reset_accelerate()
    return run_cli("run", "--config", TINY, "--output", out, *sets(*RUN, *assignments))


def manifests(out: Path) -> dict[str, bytes]:
    return {p.stem: p.read_bytes() for p in sorted((out / "stages").glob("*.json"))}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished run, shared (read-only) by the tests below."""
    out = tmp_path_factory.mktemp("run") / "tiny"
    result = run_in_process(out)
    assert result.exit_code == 0, result.output
    return out, result.output


def heldout_perplexity(model_dir: Path, tokenizer_dir: Path, blocks: int, seq_len: int) -> float:
    """What the held-out blocks are, computed here with plain transformers: the Python docs text,
    tokenized whole, cut into seq_len-token blocks; the first `blocks` blocks, each scored alone."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from uptrain.data import builtin_text

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    ids = tokenizer(builtin_text("python-docs"))["input_ids"][: blocks * seq_len]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        losses = [model(b[None], labels=b[None]).loss.item() for b in torch.tensor(ids).view(blocks, seq_len)]
    return math.exp(sum(losses) / len(losses))  # equal-length blocks: every block has seq_len - 1 targets


def test_the_run_writes_every_stage_and_a_report_that_a_plain_computation_confirms(finished):
    out, output = finished
    for name in ("converted", "checkpoints", "final", "report.json", "report.md", *PLOTS):
        assert (out / name).exists(), name
    records = {name: json.loads(data) for name, data in manifests(out).items()}
    assert sorted(records) == sorted(STAGES)
    assert all(r["status"] == "finished" and len(r["digest"]) == 64 for r in records.values())

    report = json.loads((out / "report.json").read_text())
    ppl = {m["role"]: m["perplexity"] for m in report["models"]}
    assert list(ppl) == ["source", "converted", "uptrained"]
    for role, directory in (("source", "source"), ("converted", "converted"), ("uptrained", "final")):
        expected = heldout_perplexity(out / directory, out / "converted", blocks=8, seq_len=64)
        assert ppl[role] == pytest.approx(expected, rel=1e-4), role
    assert ppl["uptrained"] < ppl["converted"]
    assert report["tokens"] == 8 * 64 and report["window"] == report["stride"] == 64

    # the held-out curve of training is on the same tokens: its first and last points are these models
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    held = [r for r in metrics if "eval_ppl" in r]
    assert held[0]["eval_ppl"] == pytest.approx(ppl["converted"], rel=1e-4)
    assert held[-1]["eval_ppl"] == pytest.approx(ppl["uptrained"], rel=1e-4)

    # KV cache per token: 2 layers x (K and V) x heads x head_dim 8 x 4 bytes (fp32)
    kv = {m["role"]: m["kv_bytes_per_token"] for m in report["models"]}
    assert kv == {"source": 2 * 2 * 8 * 8 * 4, "converted": 2 * 2 * 2 * 8 * 4, "uptrained": 2 * 2 * 2 * 8 * 4}
    assert report["training"]["steps"] == 12 and report["conversion"]["kv_heads_after"] == 2

    markdown = (out / "report.md").read_text()
    assert f"{ppl['uptrained']:,.3f}" in markdown and "![training](training.png)" in markdown
    for name in PLOTS:
        assert str(out / name) in output  # the paths are printed at the end


def test_the_plots_are_valid_pngs(finished):
    from png_checks import assert_png

    out, _ = finished
    sizes = {name: assert_png(out / name) for name in PLOTS}
    assert sizes["training.png"][0] > sizes["training.png"][1] > 100  # two panels side by side


def test_a_second_run_skips_every_finished_stage(finished, tmp_path):
    out = tmp_path / "again"
    shutil.copytree(finished[0], out)
    before = manifests(out)
    weights = (out / "final" / "model.safetensors").stat().st_mtime_ns
    result = run_in_process(out)
    assert result.exit_code == 0, result.output
    assert manifests(out) == before  # not one stage rewrote its manifest...
    assert (out / "final" / "model.safetensors").stat().st_mtime_ns == weights  # ...or its outputs
    assert result.output.count("up to date, skipped") == len(STAGES)

    # a change to the evaluation reruns the evaluations and the report, not training
    result = run_in_process(out, "report.batch_size=2")
    assert result.exit_code == 0, result.output
    after = manifests(out)
    assert {s for s in STAGES if after[s] != before[s]} == {
        "evaluate-source",
        "evaluate-converted",
        "evaluate-uptrained",
        "report",
    }


def test_a_changed_training_config_is_refused_not_mixed(finished, tmp_path):
    out = tmp_path / "changed"
    shutil.copytree(finished[0], out)
    before = manifests(out)
    result = run_in_process(out, "optim.lr=1e-3")
    assert_one_line_error(result, "holds training from other inputs", "optim.lr", "--output")
    assert manifests(out) == before


def test_run_needs_a_conversion(tmp_path):
    result = run_cli(
        "run", "--config", TINY, "--output", tmp_path / "o", "--set", "model.convert=", "--set", "model.tiny="
    )
    assert_one_line_error(result, "model.path")  # the config check: one of model.path or model.convert
    result = run_cli(
        "run",
        "--config",
        TINY,
        "--output",
        tmp_path / "o",
        *sets("model.convert=", "model.tiny=", f"model.path={tmp_path}"),
    )
    assert_one_line_error(result, "uptrain run converts first", "uptrain train")


def _wait_for(predicate, process, timeout=300.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process.poll() is not None:
            _, err = process.communicate()
            pytest.fail(f"the run ended (rc {process.returncode}) before it could be killed:\n{err}")
        time.sleep(0.05)
    process.kill()
    pytest.fail("timed out waiting for the run")


@pytest.mark.slow
def test_a_run_killed_while_training_resumes_in_that_stage(tmp_path):
    out = tmp_path / "killed"
    assignments = (*RUN, "budget.max_steps=24", "eval.every_steps=0", "checkpoint.every_steps=4")
    command = [sys.executable, "-m", "uptrain", "run", "--config", str(TINY), "--output", str(out)]
    command += sets(*assignments)
    process = subprocess.Popen(
        command, env=quiet_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_for(lambda: (out / "checkpoints" / "step-00000008").is_dir(), process)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert not (out / "final").exists(), "the run finished before it could be killed"
    before = manifests(out)
    assert json.loads(before["train"])["status"] == "started"
    assert set(before) == {"convert", "evaluate-source", "evaluate-converted", "train"}

    resumed = subprocess.run(command, env=quiet_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    after = manifests(out)
    assert {s: after[s] for s in ("convert", "evaluate-source", "evaluate-converted")} == {
        s: before[s] for s in ("convert", "evaluate-source", "evaluate-converted")
    }
    assert "resumed from" in resumed.stdout and "[4/6] train" in resumed.stdout
    assert all(json.loads(after[s])["status"] == "finished" for s in STAGES)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    trained = [r["step"] for r in records if "loss" in r]
    assert trained == list(range(1, 25))  # each step once: the steps after the checkpoint were redone
    assert (out / "report.json").is_file()


def test_push_at_the_end_uploads_final_with_the_report_on_its_card(finished, tmp_path, monkeypatch):
    from hub_server import FakeHub
    from huggingface_hub import constants
    from push_fixtures import FAKE_TOKEN

    out = tmp_path / "pushed"
    shutil.copytree(finished[0], out)
    with FakeHub(token=FAKE_TOKEN) as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-stored-token"))
        monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "agent-harnesses.json"))
        monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
        result = run_in_process(out, "push.repo=tester/tiny-run")
        assert result.exit_code == 0, result.output
        assert result.output.count("up to date, skipped") == len(STAGES)  # only push ran
        arrived = hub.files("tester/tiny-run")
        assert arrived["model.safetensors"] == (out / "final" / "model.safetensors").read_bytes()
        assert not any(name.startswith(("checkpoints", "metrics")) for name in arrived)
        card = arrived["README.md"].decode()
        report = json.loads((out / "report.json").read_text())
        for m in report["models"]:
            assert f"{m['perplexity']:.3f}" in card, m["role"]
        assert FAKE_TOKEN not in result.output
        assert FAKE_TOKEN.encode() not in b"".join(p.read_bytes() for p in (out / "stages").glob("*.json"))
        assert json.loads((out / "stages" / "push.json").read_text())["repo_id"] == "tester/tiny-run"

        again = run_in_process(out, "push.repo=tester/tiny-run")
        assert again.exit_code == 0, again.output
        assert hub.calls("commit") == 1  # pushed once; the rerun found it up to date


def test_a_push_without_a_token_fails_before_any_work(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-stored-token"))
    monkeypatch.setattr(constants, "HF_TOKEN", None, raising=False)
    result = run_in_process(tmp_path / "out", "push.repo=tester/tiny-run")
    assert_one_line_error(result, "push.repo", "HF_TOKEN")
    assert not (tmp_path / "out").exists()
    result = run_in_process(tmp_path / "out", "push.repo=not a/valid--id")
    assert_one_line_error(result, "not a valid Hub repo id")
