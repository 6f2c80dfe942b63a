"""What a long run shows while it works: units done and left, what runs now, an ETA.

Lines go to standard error at most every ``every_s`` seconds (and at the end). When the
environment names a file in ``EFFX_PROGRESS_FILE``, the latest line is also written there
(atomically): the pipeline runs notebooks under papermill, which captures their output, and
prints that file's line to the terminal instead.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

PROGRESS_FILE_ENV = "EFFX_PROGRESS_FILE"


def duration(seconds: float) -> str:
    """'45s', '3m05s', '1h02m'."""
    s = int(round(max(seconds, 0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class Progress:
    """Progress of one study's units. ``costs`` are the units' estimated seconds (relative
    weights are enough): the ETA scales the time spent so far by the cost still to do."""

    def __init__(self, study: str, costs: list[float], resumed: int = 0, stream=None,
                 every_s: float = 5.0):
        self.study, self.every_s = study, every_s
        self.stream = sys.stderr if stream is None else stream
        self.total_cost = float(sum(costs)) or 1.0
        self.n, self.resumed = len(costs), resumed
        self.done, self.done_cost = 0, 0.0
        self.t0 = time.perf_counter()
        self.now, self.note_text, self._last = "", "", 0.0
        self.file = os.environ.get(PROGRESS_FILE_ENV)

    def line(self) -> str:
        elapsed = time.perf_counter() - self.t0
        eta = ""
        if self.done_cost > 0 and self.done < self.n:
            left = elapsed / self.done_cost * (self.total_cost - self.done_cost)
            eta = f", ETA {duration(left)}"
        resumed = f" (+{self.resumed} already recorded)" if self.resumed else ""
        now = f" | {self.now}" if self.now and self.done < self.n else ""
        note = f" | {self.note_text}" if self.note_text and self.done < self.n else ""
        return (f"[{self.study}] {self.done}/{self.n} units done{resumed}{now}{note} | "
                f"{duration(elapsed)} elapsed{eta}")

    def _show(self, force: bool = False) -> None:
        t = time.perf_counter()
        if not force and t - self._last < self.every_s:
            return
        self._last = t
        text = self.line()
        print(text, file=self.stream, flush=True)
        if self.file:
            path = Path(self.file)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text + "\n")
            os.replace(tmp, path)

    def start(self, label: str) -> None:
        self.now, self.note_text = label, ""
        self._show()

    def note(self, text: str) -> None:
        """Text from inside the running unit (e.g. a training step): shown with the next line."""
        self.note_text = text.strip().splitlines()[-1][:160] if text.strip() else ""
        self._show()

    def tick(self) -> None:
        """A heartbeat while a unit runs: the elapsed time and ETA move every few seconds."""
        self._show()

    def finish(self, cost: float) -> None:
        self.done += 1
        self.done_cost += cost
        self._show(force=self.done == self.n)

    def close(self) -> None:
        self._show(force=True)
