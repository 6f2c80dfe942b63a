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
    weights are enough). The ETA converts cost to seconds at the rate the finished units ran
    (wall time up to the last finish over their cost): the units not started yet take their
    cost at that rate, a running unit its cost less the time it has run so far (never below
    nothing), so the ETA falls while a unit runs instead of growing with its elapsed time."""

    def __init__(self, study: str, costs: list[float], resumed: int = 0, stream=None,
                 every_s: float = 5.0, clock=time.perf_counter):
        self.study, self.every_s, self.clock = study, every_s, clock
        self.stream = sys.stderr if stream is None else stream
        self.total_cost = float(sum(costs)) or 1.0
        self.n, self.resumed = len(costs), resumed
        self.done, self.done_cost = 0, 0.0
        self.t0 = self.clock()
        self.finished_at = 0.0                          # seconds after t0 of the last finish
        self.running: list[tuple[float, float]] = []    # (cost, start time) of started units
        self.now, self.note_text, self._last = "", "", 0.0
        self.file = os.environ.get(PROGRESS_FILE_ENV)

    def seconds_left(self, now: float | None = None) -> float | None:
        """Estimated seconds until every unit is done; None before the first finishes."""
        if self.done_cost <= 0 or self.done >= self.n:
            return None
        now = self.clock() if now is None else now
        rate = self.finished_at / self.done_cost
        running = sum(c for c, _ in self.running)
        unstarted = max(self.total_cost - self.done_cost - running, 0.0) * rate
        return unstarted + sum(max(c * rate - (now - t), 0.0) for c, t in self.running)

    def line(self) -> str:
        now = self.clock()
        elapsed = now - self.t0
        left = self.seconds_left(now)
        eta = "" if left is None else f", ETA {duration(left)}"
        resumed = f" (+{self.resumed} already recorded)" if self.resumed else ""
        now = f" | {self.now}" if self.now and self.done < self.n else ""
        note = f" | {self.note_text}" if self.note_text and self.done < self.n else ""
        return (f"[{self.study}] {self.done}/{self.n} units done{resumed}{now}{note} | "
                f"{duration(elapsed)} elapsed{eta}")

    def _show(self, force: bool = False) -> None:
        t = self.clock()
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

    def start(self, label: str, cost: float = 0.0) -> None:
        self.now, self.note_text = label, ""
        self.running.append((cost, self.clock()))
        self._show()

    def note(self, text: str) -> None:
        """Text from inside the running unit (e.g. a training step): shown with the next line."""
        self.note_text = text.strip().splitlines()[-1][:160] if text.strip() else ""
        self._show()

    def tick(self) -> None:
        """A heartbeat while a unit runs: the elapsed time and ETA move every few seconds."""
        self._show()

    def finish(self, cost: float, started: bool = True) -> None:
        """A unit of this cost ended: it ran (the earliest started unit of that cost leaves the
        running ones), or it was skipped without starting (``started=False``)."""
        now = self.clock()
        if started:
            ran = next((i for i, (c, _) in enumerate(self.running) if c == cost), None)
            if ran is not None:
                del self.running[ran]
        self.done += 1
        self.done_cost += cost
        self.finished_at = now - self.t0
        self._show(force=self.done == self.n)

    def close(self) -> None:
        self._show(force=True)
