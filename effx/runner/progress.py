"""What a long run shows while it works: units done and left, what runs now, an ETA.

Lines go to standard error at most every ``every_s`` seconds (and at the end). When the
environment names a file in ``EFFX_PROGRESS_FILE``, the latest line is also written there
(atomically): the pipeline runs notebooks under papermill, which captures their output, and
prints that file's line to the terminal instead.
"""
from __future__ import annotations

import os
import re
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


def eta(elapsed_s: float, done: int, total: int) -> str:
    """'ETA 3m05s': the work left (total - done) at the rate so far (done in elapsed_s), in the
    form ``eta_in`` reads back from a unit's output."""
    return f"ETA {duration(elapsed_s / max(done, 1) * max(total - done, 0))}"


_ETA = re.compile(r"\bETA (?=\d)(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def eta_in(text: str) -> float | None:
    """Seconds of the last 'ETA 1h02m' / 'ETA 3m05s' / 'ETA 45s' in a line, else None."""
    found = list(_ETA.finditer(text))
    if not found or not any(found[-1].groups()):
        return None
    h, m, s = (int(g or 0) for g in found[-1].groups())
    return 3600.0 * h + 60.0 * m + s


class Progress:
    """Progress of one study's units. ``costs`` are the units' estimated seconds (relative
    weights are enough). The ETA converts cost to seconds at the rate the finished units ran
    (wall time up to the last finish over their cost): the units not started yet take their
    cost at that rate, a running unit its cost less the time it has run so far, so the ETA
    falls while a unit runs instead of growing with its elapsed time. A unit that reports its
    own ETA in its output (a training loop does) is trusted over that guess while it runs alone;
    one that has run past its guess without reporting makes the ETA a lower bound, said so."""

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
        self.reported: tuple[float, float] | None = None   # (unit's own ETA, when it said so)
        self.file = os.environ.get(PROGRESS_FILE_ENV)

    def seconds_left(self, now: float | None = None) -> float | None:
        """Estimated seconds until every unit is done; None before the first finishes (unless
        the one unit left reports its own ETA)."""
        if self.done >= self.n:
            return None
        now = self.clock() if now is None else now
        own = self._reported_left(now)
        if self.done_cost <= 0:
            return own if own is not None and self.n - self.done == 1 else None
        rate = self.finished_at / self.done_cost
        running = sum(c for c, _ in self.running)
        unstarted = max(self.total_cost - self.done_cost - running, 0.0) * rate
        if own is not None:
            return unstarted + own
        return unstarted + sum(max(c * rate - (now - t), 0.0) for c, t in self.running)

    def _reported_left(self, now: float) -> float | None:
        """What the one running unit's own ETA leaves; None when it has run out (its last
        phase, e.g. evaluation, was not in it) or when several units run."""
        if self.reported is None or len(self.running) != 1:
            return None
        left, said_at = self.reported
        return left - (now - said_at) if now - said_at < left else None

    def past_estimate(self, now: float | None = None) -> bool:
        """Whether a running unit without an ETA of its own has run longer than its guess."""
        now = self.clock() if now is None else now
        if self.done_cost <= 0 or self._reported_left(now) is not None:
            return False
        rate = self.finished_at / self.done_cost
        return any(now - t > c * rate for c, t in self.running)

    def line(self) -> str:
        now = self.clock()
        elapsed = now - self.t0
        left = self.seconds_left(now)
        past = left is not None and self.past_estimate(now)
        eta = "" if left is None else (
            f", ETA at least {duration(left)} (a unit runs past its estimate)" if past and left >= 1
            else ", ETA unknown (a unit runs past its estimate)" if past
            else f", ETA {duration(left)}")
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
        self.now, self.note_text, self.reported = label, "", None
        self.running.append((cost, self.clock()))
        self._show()

    def note(self, text: str) -> None:
        """Text from inside the running unit (e.g. a training step): shown with the next line."""
        last = text.strip().splitlines()[-1] if text.strip() else ""
        self.note_text = last[:160]
        own = eta_in(last)
        if own is not None:
            self.reported = (own, self.clock())
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
                self.reported = None
        self.done += 1
        self.done_cost += cost
        self.finished_at = now - self.t0
        self._show(force=self.done == self.n)

    def close(self) -> None:
        self._show(force=True)
