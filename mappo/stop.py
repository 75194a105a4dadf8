"""Stopping a run cleanly on SIGINT/SIGTERM: finish the iteration, write a checkpoint, exit."""
from __future__ import annotations

import signal
import threading
from typing import Any, Dict, Optional


class StopOnSignal:
    """While active, the first SIGINT/SIGTERM only records the signal (the training loop stops
    after the current iteration and writes a checkpoint); a second one (of either kind)
    interrupts at once, e.g. while an env hangs.  Handlers can only be set from the main
    thread; elsewhere this does nothing."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self.previous: Dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping at once")
        self.signum = signum
        print(f"\nreceived {signal.Signals(signum).name}: stopping after this iteration and saving a checkpoint",
              flush=True)

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
