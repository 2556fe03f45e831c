"""A full disk, for real where the sandbox lets us mount a small tmpfs, and always through a file-size limit
(RLIMIT_FSIZE) or an injected failure: convert leaves nothing behind, train keeps its previous checkpoint,
and each says so in one line.

tests/convert/test_convert_errors.py::test_disk_full_mid_write_removes_temporary (ENOSPC from pwrite) and
tests/train/test_train_loop.py::test_no_room_for_a_checkpoint_keeps_the_previous_one (ENOSPC from save_state)
are the injected variants that always run; they are not repeated here.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys

import pytest
from cli_helpers import assert_one_line_error, run_cli, subprocess_env
from tiny_models import build_tiny
from train_runs import losses, reset_accelerate, train_in_process


@pytest.fixture
def small_tmpfs(tmp_path):
    """mount(tmpfs) of a given size on a fresh directory, or a skip saying why it cannot be done."""
    mounted = []

    def mount(where, size_bytes: int):
        where.mkdir(parents=True, exist_ok=True)
        if shutil.which("mount") is None:
            pytest.skip("no mount command: the tmpfs variant cannot run here (the injected variants do)")
        kb = max(4, size_bytes // 1024)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={kb}k", "tmpfs", str(where)], capture_output=True, text=True
        )
        if done.returncode != 0:
            why = " ".join(done.stderr.split()) or f"exit {done.returncode}"
            pytest.skip(f"cannot mount a tmpfs here ({why}); the RLIMIT_FSIZE and injected variants run")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _nothing_in(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_convert_onto_a_full_tmpfs_leaves_nothing(tmp_path, small_tmpfs):
    """The weights fit (the up-front space check passes), then a large tokenizer file does not."""
    src = build_tiny("llama", tmp_path / "src", kv_heads=8)
    weights = (src / "model.safetensors").stat().st_size
    (src / "tokenizer.json").write_bytes(os.urandom(4 * weights))
    disk = small_tmpfs(tmp_path / "disk", 2 * weights)
    result = run_cli("convert", src, disk / "out", "-g", "2")
    assert_one_line_error(result, "no space left on the device", "free space")
    assert _nothing_in(disk) == []
    assert shutil.disk_usage(disk).used == 0  # nothing half-written holds space either


def test_convert_to_a_tmpfs_that_cannot_hold_the_weights_is_refused_up_front(tmp_path, small_tmpfs):
    src = build_tiny("llama", tmp_path / "src", kv_heads=8)
    disk = small_tmpfs(tmp_path / "disk", (src / "model.safetensors").stat().st_size // 4)
    assert_one_line_error(run_cli("convert", src, disk / "out", "-g", "2"), "GB is free", "free space")
    assert _nothing_in(disk) == []


def _file_size_limit(limit: int):
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing us

    return preexec


@pytest.mark.slow
def test_convert_past_a_file_size_limit_leaves_nothing(tmp_path):
    """A real OS refusal in a real process: RLIMIT_FSIZE below the size of the one output shard."""
    src = build_tiny("llama", tmp_path / "src", kv_heads=8)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "uptrain", "convert", str(src), str(out), "-g", "2"],
        env=subprocess_env(OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1"),
        capture_output=True,
        text=True,
        preexec_fn=_file_size_limit((src / "model.safetensors").stat().st_size // 2),
        timeout=300,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.strip().startswith("error: ") and len(done.stderr.strip().splitlines()) == 1
    assert "ulimit -f" in done.stderr and "Traceback" not in done.stderr
    assert _nothing_in(tmp_path) == ["src"]


def test_preallocation_refused_for_lack_of_space_leaves_nothing(tmp_path, monkeypatch):
    """The writer reserves every shard in full before computing anything; a refusal there is one line."""
    import uptrain.checkpoint.writer as writer

    calls = []

    def full(fd, offset, length):
        calls.append(length)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.ftruncate(fd, offset + length)

    monkeypatch.setattr(writer.os, "posix_fallocate", full)
    src = build_tiny("llama", tmp_path / "src", kv_heads=8, max_shard_size="60KB")
    result = run_cli("convert", src, tmp_path / "out", "-g", "2")
    assert_one_line_error(result, "no space left on the device", "free space")
    assert len(calls) == 2
    assert _nothing_in(tmp_path) == ["src"]


@pytest.mark.slow
def test_train_keeps_its_previous_checkpoint_when_the_disk_fills(tmp_path, small_tmpfs, monkeypatch):
    """checkpoints/ on a tmpfs that the test fills after the first save: the second save meets a real
    ENOSPC, the first checkpoint stays whole, and the run resumes from it elsewhere."""
    import uptrain.train.steps as steps

    out = tmp_path / "run"
    disk = small_tmpfs(out / "checkpoints", 64 * 1024 * 1024)
    real = steps.save_checkpoint

    def save_then_fill(accelerator, root, state, keep_last):
        saved = real(accelerator, root, state, keep_last)
        size = sum(p.stat().st_size for p in saved.rglob("*") if p.is_file())
        free = shutil.disk_usage(disk).free
        (disk / ".filler").write_bytes(b"\0" * max(0, free - size // 2))  # room for half a checkpoint
        return saved

    monkeypatch.setattr(steps, "save_checkpoint", save_then_fill)
    reset_accelerate()
    result = train_in_process(out, "budget.max_steps=6", "checkpoint.every_steps=2")
    assert_one_line_error(result, "step-00000004", "no space left", "step-00000002 is intact", "--resume")
    assert sorted(p.name for p in disk.iterdir()) == [".filler", "step-00000002"]  # no half checkpoint
    state = json.loads((disk / "step-00000002" / "trainer_state.json").read_text())
    assert state["step"] == 2 and not (out / "final").exists()

    (disk / ".filler").unlink()  # space is back: the same run resumes from the kept checkpoint
    monkeypatch.setattr(steps, "save_checkpoint", real)
    reset_accelerate()
    resumed = train_in_process(out, "budget.max_steps=6", "checkpoint.every_steps=2", resume=True)
    assert resumed.exit_code == 0, resumed.output
    assert "resumed from" in resumed.output and sorted(losses(out)) == [1, 2, 3, 4, 5, 6]
