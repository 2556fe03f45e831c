"""`uptrain train` on a streamed data.mix with the held-out curve on another text (eval.dataset): the run
finishes, records each source's weight and the tokens drawn from it, and the text its curve was scored on;
two CPU processes (torchrun, gloo) draw the same blocks between them as one process does alone."""

from __future__ import annotations

import json

import pytest
from tolerances import LOSS_RTOL
from train_runs import kill_mid_run, losses, torchrun_subprocess, train_subprocess


def _texts(root):
    t1, t2, held = root / "T1.txt", root / "T2.txt", root / "held.txt"
    t1.write_text("".join(f"The first source, line {i}: alpha beta gamma.\n" for i in range(600)))
    t2.write_text("".join(f"second source {i} -- zeta eta theta\n" for i in range(600)))
    held.write_text("".join(f"A held-out sentence number {i}.\n" for i in range(100)))
    return t1, t2, held


def _mix_run(t1, t2, held, *more):
    return (
        "data.dataset=null",
        f"data.mix=[{{dataset: {t1}, weight: 0.7}}, {{dataset: {t2}, weight: 0.3}}]",
        "data.streaming=true",
        f"eval.dataset={held}",
        "budget.max_steps=6",
        "eval.every_steps=3",
        *more,
    )


def _training(out):
    return json.loads((out / "final" / "uptrain.json").read_text())["training"]


def test_a_streamed_mixture_with_another_held_out_text_runs_and_records_the_draw(tmp_path):
    t1, t2, held = _texts(tmp_path)
    out = tmp_path / "run"
    result = train_subprocess(out, *_mix_run(t1, t2, held))
    assert result.returncode == 0, result.stderr[-3000:]
    training = _training(out)
    mix = training["datasets"]
    assert [(m["id"], m["weight"]) for m in mix] == [(str(t1), 0.7), (str(t2), 0.3)]
    assert sum(m["tokens_drawn"] for m in mix) == training["tokens_seen"] == 6 * 8 * 64
    assert all(m["tokens_drawn"] == m["blocks_drawn"] * 64 and m["blocks_drawn"] > 0 for m in mix)
    assert training["heldout"]["text"].startswith(str(held))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = {r["step"]: r["eval_tokens"] for r in records if "eval_loss" in r}
    assert sorted(evals) == [0, 3, 6]
    # 8 x 64 tokens of held.txt in windows of 64, stride 32: every token but the first is scored
    assert set(evals.values()) == {8 * 64 - 1}


@pytest.mark.slow
def test_two_processes_draw_the_same_mixture_as_one(tmp_path):
    t1, t2, held = _texts(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    single = train_subprocess(one, *_mix_run(t1, t2, held, "train.per_device_batch=4"))
    assert single.returncode == 0, single.stderr[-3000:]
    double = torchrun_subprocess(two, *_mix_run(t1, t2, held, "train.per_device_batch=2"))
    assert double.returncode == 0, double.stderr[-3000:]
    # each process trained on its own half of every global batch: together, exactly one process's blocks
    drawn = [[m["blocks_drawn"] for m in _training(d)["datasets"]] for d in (one, two)]
    assert drawn[0] == drawn[1] and sum(drawn[1]) == 6 * 8
    expected, got = losses(one), losses(two)
    assert sorted(got) == sorted(expected) == list(range(1, 7))
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=LOSS_RTOL), step


@pytest.mark.slow
def test_a_killed_mixture_run_resumes_with_the_same_draw(tmp_path):
    """SIGKILL after a checkpoint, then --resume: the same losses and the same tokens drawn per source as
    an uninterrupted run (the counts before the checkpoint come back from it)."""
    t1, t2, held = _texts(tmp_path)
    run = (
        "data.dataset=null",
        f"data.mix=[{{dataset: {t1}, weight: 0.6}}, {{dataset: {t2}, weight: 0.4}}]",
        "budget.max_steps=24",
        "checkpoint.every_steps=4",
    )
    reference = tmp_path / "reference"
    done = train_subprocess(reference, *run)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "killed"
    killed_at = kill_mid_run(out, *run)
    resumed = train_subprocess(out, *run, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    assert losses(out) == losses(reference), f"killed after step {killed_at}"
    drawn = [[m["blocks_drawn"] for m in _training(d)["datasets"]] for d in (reference, out)]
    assert drawn[0] == drawn[1] and sum(drawn[0]) == 24 * 8
