"""Running configs/tiny-cpu.yaml small, in-process or in a subprocess, for the training tests."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import run_cli, subprocess_env

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny-cpu.yaml"

# A few seconds per run: 64-token blocks, 4 x 2 blocks per step, a log line every step.
SMALL = [
    "data.seq_len=64",
    "train.per_device_batch=4",
    "train.grad_accum=2",
    "eval.blocks=8",
    "eval.every_steps=0",
    "logging.every_steps=1",
]


def sets(*assignments: str) -> list[str]:
    return [arg for a in assignments for arg in ("--set", a)]


def train_in_process(out: Path, *assignments: str, resume: bool = False):
    """`uptrain train` through the CLI in this process (call reset_accelerate() between runs)."""
    args = ["train", "--config", TINY, "--output", out, *sets(*SMALL, *assignments)]
    return run_cli(*args, *(["--resume"] if resume else []))


def train_command(out: Path, *assignments: str, resume: bool = False) -> list[str]:
    args = ["-m", "uptrain", "train", "--config", str(TINY), "--output", str(out)]
    return [sys.executable, *args, *sets(*SMALL, *assignments), *(["--resume"] if resume else [])]


def quiet_env(**extra: str) -> dict:
    """One thread per process: on a shared 2-core machine, more threads only contend."""
    return subprocess_env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)


def train_subprocess(out: Path, *assignments: str, resume: bool = False, timeout: float = 300):
    return subprocess.run(
        train_command(out, *assignments, resume=resume),
        env=quiet_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def losses(out: Path) -> dict[int, float]:
    """step -> training loss, from metrics.jsonl."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def reset_accelerate() -> None:
    """Accelerate keeps process-wide singletons; in-process runs each start from a clean slate."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def wait_for(predicate, process, timeout=240.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the run ended (rc {process.returncode}) before the moment to interrupt it:\n{err}")
        time.sleep(0.02)
    process.kill()
    pytest.fail("timed out waiting for the run")


def logged_step(out) -> int:
    metrics = out / "metrics.jsonl"
    if not metrics.exists():
        return 0
    steps = [
        json.loads(line).get("step", 0) for line in metrics.read_text().splitlines() if line.endswith("}")
    ]
    return max(steps, default=0)


ACCELERATE_CONFIGS = ROOT / "configs" / "accelerate"


def start_training(out: Path, *assignments: str) -> subprocess.Popen:
    """`uptrain train` on configs/tiny-cpu.yaml in a subprocess, its output piped, not waited for."""
    return subprocess.Popen(
        train_command(out, *assignments),
        env=quiet_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_mid_run(out: Path, *assignments: str, checkpoint: str = "step-00000008", after_step: int = 9) -> int:
    """Start `uptrain train` in a subprocess, SIGKILL it once `checkpoint` exists and a later step
    was logged, check it died unfinished, and return the last logged step."""
    import signal

    process = start_training(out, *assignments)
    wait_for(lambda: (out / "checkpoints" / checkpoint).is_dir() and logged_step(out) >= after_step, process)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert not (out / "final").exists(), "the run finished before it could be killed"
    return logged_step(out)


def torchrun_subprocess(out: Path, *assignments: str, processes: int = 2, timeout: float = 300):
    """`uptrain train` on `processes` CPU processes through torch.distributed.run (gloo)."""
    command = [
        sys.executable,
        *("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)),
        *("-m", "uptrain", "train", "--config", str(TINY), "--output", str(out)),
        *sets(*SMALL, *assignments),
    ]
    return subprocess.run(command, env=quiet_env(), capture_output=True, text=True, timeout=timeout)


def launch_command(out: Path, accelerate_config: str, *assignments: str, resume: bool = False) -> list[str]:
    """`accelerate launch --config_file configs/accelerate/NAME -m uptrain train ...` (two CPU processes)."""
    launcher = [
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ACCELERATE_CONFIGS / accelerate_config),
    ]
    return [sys.executable, *launcher, *train_command(out, *assignments, resume=resume)[1:]]


def launch_subprocess(out: Path, accelerate_config: str, *assignments: str, resume: bool = False):
    return subprocess.run(
        launch_command(out, accelerate_config, *assignments, resume=resume),
        env=quiet_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
