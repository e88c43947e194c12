"""How a pack's loop hears a stop: SIGTERM and Ctrl-C, as Lightning's loop does for a run alone."""
from __future__ import annotations

import signal
import threading


class StepBoundarySignals:
    """SIGTERM and a first Ctrl-C ask the loop to stop at the next step boundary."""

    def __init__(self):
        self.stop = False
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.stop and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop = True
        if signum == signal.SIGINT:
            print("\ninterrupt: stopping after this step and saving checkpoints (Ctrl-C again to abort)", flush=True)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False
