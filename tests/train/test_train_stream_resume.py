"""A streamed run (one source, or a data.mix mixture) killed with SIGKILL and resumed: the same losses as
an uninterrupted run, bit for bit, from the stream's position and shuffle window kept in the checkpoint
(the position itself, and that nothing before it is tokenized again: test_train_stream_position.py)."""

from __future__ import annotations

import json
import signal
import subprocess

import psutil
import pytest
from train_runs import (
    kill_mid_run,
    launch_command,
    launch_subprocess,
    logged_step,
    losses,
    quiet_env,
    reset_accelerate,
    train_in_process,
    train_subprocess,
    wait_for,
)

DDP = "cpu-2proc.yaml"

RUN = ("budget.max_steps=24", "checkpoint.every_steps=4", "data.streaming=true", "data.shuffle_buffer=20")


def _jsonl(path, line):
    path.write_text("".join(json.dumps({"text": line.format(i)}) + "\n" for i in range(400)))
    return path


def _sources(root):
    one = _jsonl(root / "one.jsonl", "The first source, document {}: alpha beta gamma.")
    two = _jsonl(root / "two.jsonl", "second source {} -- zeta eta theta")
    return one, two


def _killed_and_resumed(root, *run):
    reference = root / "reference"
    done = train_subprocess(reference, *run)
    assert done.returncode == 0, done.stderr[-3000:]
    out = root / "killed"
    killed_at = kill_mid_run(out, *run)
    resumed = train_subprocess(out, *run, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    return losses(reference), losses(out), killed_at


@pytest.mark.slow
@pytest.mark.parametrize("mixed", [False, True], ids=["one source", "mixture"])
def test_a_killed_streamed_run_resumes_with_the_same_losses(tmp_path, mixed):
    one, two = _sources(tmp_path)
    data = (
        ("data.dataset=null", f"data.mix=[{{dataset: {one}, weight: 0.6}}, {{dataset: {two}, weight: 0.4}}]")
        if mixed
        else (f"data.dataset={one}",)
    )
    expected, got, killed_at = _killed_and_resumed(tmp_path, *RUN, *data)
    assert sorted(expected) == list(range(1, 25))
    assert got == expected, f"killed after step {killed_at}"  # bit for bit: the same batches


@pytest.mark.slow
def test_two_processes_resume_a_killed_streamed_run(tmp_path):
    """accelerate launch, two CPU processes (DDP, gloo), all killed at once: the resumed run gives the losses
    of the uninterrupted one (the main process reads the stream and hands each process its share)."""
    one, _ = _sources(tmp_path)
    run = (*RUN, f"data.dataset={one}", "train.per_device_batch=2")
    reference = tmp_path / "reference"
    done = launch_subprocess(reference, DDP, *run)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "killed"
    process = subprocess.Popen(
        launch_command(out, DDP, *run),
        env=quiet_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: (out / "checkpoints" / "step-00000008").is_dir() and logged_step(out) >= 9, process)
    for victim in [*psutil.Process(process.pid).children(recursive=True), psutil.Process(process.pid)]:
        victim.send_signal(signal.SIGKILL)
    process.communicate()
    assert not (out / "final").exists(), "the run finished before it could be killed"
    resumed = launch_subprocess(out, DDP, *run, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    assert losses(out) == losses(reference)


def test_a_checkpoint_without_the_stream_position_is_refused(tmp_path):
    """A checkpoint from before the position was kept: a one-line error, not a traceback or a guess."""
    one, _ = _sources(tmp_path)
    run = ("budget.max_steps=2", "checkpoint.every_steps=1", "data.streaming=true", f"data.dataset={one}")
    out = tmp_path / "run"
    reset_accelerate()
    assert train_in_process(out, *run).exit_code == 0
    for position in (out / "checkpoints").glob("step-*/custom_checkpoint_0.pkl"):
        position.unlink()
    (out / "final" / "uptrain.json").unlink()
    reset_accelerate()
    result = train_in_process(out, *run, resume=True)
    reset_accelerate()
    assert result.exit_code != 0
    assert "holds no position in the streamed data" in result.output, result.output
