"""Running `uptrain` in child processes that a test kills at chosen moments.

Each run is its own process, started by multiprocessing's fork server, which has imported torch and
uptrain once: a fresh process per run costs a fork, not a 3-10 s torch import, so a test can kill
dozens of conversions. The child runs the real entry point (uptrain.__main__.main) with its output in
a log file; SIGKILL, SIGINT and SIGTERM reach it as they would reach `uptrain` in a shell.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import sys
import time
from pathlib import Path

PRELOAD = ["torch", "safetensors.torch", "uptrain.cli", "uptrain.convert.convert", "interrupt_helpers"]


def _warm_up() -> None:
    """The first operations on meta tensors import sympy and torch._dynamo (seconds); convert plans on
    the meta device, so do it once here, where the fork server inherits it."""
    import torch

    x = torch.empty(4, 2, device="meta")
    torch.cat([x, x]).to(torch.float64).mean(dim=0).clone()


_warm_up()


def _child(argv: list[str], log: str, ready) -> None:  # noqa: ANN001 - a multiprocessing Event
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import torch

    torch.set_num_threads(1)
    sys.argv = ["uptrain", *argv]
    from uptrain.__main__ import main

    ready.set()
    main()


class Runner:
    """Starts `uptrain ARGV` in a fresh child process; `ready` is set once its signal handling is in
    place (the moment a user's Ctrl-C could first arrive)."""

    def __init__(self) -> None:
        from multiprocessing import forkserver

        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(PRELOAD)
        # the server imports PRELOAD on start-up, finding modules through PYTHONPATH only
        here = Path(__file__).resolve().parent
        previous = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join([str(here.parents[1]), str(here), previous or ""])
        try:
            forkserver.ensure_running()
        finally:
            if previous is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = previous

    def start(self, argv: list, log: Path):
        ready = self.ctx.Event()
        process = self.ctx.Process(target=_child, args=([str(a) for a in argv], str(log), ready))
        process.start()
        if not ready.wait(120):
            process.kill()
            raise AssertionError(f"the child never started: {log.read_text() if log.exists() else ''}")
        return process

    def run(self, argv: list, log: Path, timeout: float = 300) -> tuple[int, float]:
        """Run to the end: (exit code, seconds from ready to exit)."""
        process = self.start(argv, log)
        started = time.monotonic()
        process.join(timeout)
        assert process.exitcode is not None, "the run did not finish"
        return process.exitcode, time.monotonic() - started


def leftovers(out: Path) -> list[str]:
    """What lies beside OUT: the temporaries of runs for OUT (.OUT.uptrain-tmp|old-PID-HEX)."""
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.uptrain-(tmp|old)-\d+-[0-9a-f]+$")
    return sorted(p.name for p in out.parent.iterdir() if pattern.match(p.name))


def owner_pid(name: str) -> int:
    return int(name.rsplit("-", 2)[1])
