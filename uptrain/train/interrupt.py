"""Stopping cleanly on SIGINT or SIGTERM: finish the optimizer step, save a checkpoint, exit.

While training runs, the first signal only sets a flag that the loop reads between optimizer steps
(so no step is left half-applied); a second one interrupts at once. With several processes the flag
is combined across them, so that all stop after the same step.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import torch

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def agreed(self, accelerator: Any) -> bool:
        """Whether any process was asked to stop (a collective call when there are several)."""
        if accelerator.num_processes == 1:
            return self.requested
        flag = torch.tensor([1.0 if self.requested else 0.0], device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="sum").item() > 0)
