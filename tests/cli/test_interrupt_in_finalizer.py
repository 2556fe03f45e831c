"""A SIGINT/SIGTERM that arrives while a __del__ runs (importing transformers frees many regex objects)
cannot interrupt there: Python prints an exception raised in a finalizer and drops it. The handler
sends the signal again a moment later instead, and raises KeyboardInterrupt everywhere else."""

import os
import signal
import sys
from types import SimpleNamespace

import pytest

import uptrain.cli as cli


def test_a_signal_inside_a_finalizer_is_sent_again_and_elsewhere_raises(monkeypatch):
    scheduled = []

    def timer(delay, function, args):
        return SimpleNamespace(start=lambda: scheduled.append((delay > 0, function, args)))

    monkeypatch.setattr(cli.threading, "Timer", timer)
    monkeypatch.setattr(cli, "_signalled", [])
    monkeypatch.setattr(cli, "_resent", [])
    raised = []

    class Finalized:
        def __del__(self):
            try:
                cli._raise_interrupt(signal.SIGTERM, sys._getframe())
            except KeyboardInterrupt:
                raised.append(True)

    obj = Finalized()
    del obj
    assert raised == []  # nothing raised where Python would drop it
    assert scheduled == [(True, os.kill, (os.getpid(), signal.SIGTERM))]
    with pytest.raises(KeyboardInterrupt):
        cli._raise_interrupt(signal.SIGINT, sys._getframe())
    assert cli._signalled == [signal.SIGTERM, signal.SIGINT]
