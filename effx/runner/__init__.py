"""The one runner: every study's units, executed, recorded, resumed, guarded and shown.

    summary = run_study(study, P)                 # P = study.validate(...)

- Resume: a unit whose records are all final (``effx.study.FINAL``) is not executed again; a unit
  that failed, or was stopped by a smaller time budget than the current one, is.
- Isolation: units run in a worker process under a memory limit (``effx.runner.local``); an
  out-of-memory unit is recorded as ``oom`` with the limit it hit, and the later units of its
  series as ``skipped_after_oom``; the caller survives.
- Failures: an exception in a unit is recorded as ``failed`` with its cause and traceback; the
  run goes on and the summary lists the failures.
- Provenance: one run record (commit, versions, hardware, parameters) per call that executes
  something; every record carries the run id, its unit, host, threads, load before and after.
- Progress: units done and left, what runs now, an ETA (``effx.runner.progress``). The worker's
  own output (warnings, C libraries' lines) goes to ``data/results/<profile>/logs/<study>.log``.

Backends: ``process`` (default), ``inline`` (same process) and ``ray`` (``effx.runner.ray``, units
of different series at once across a cluster). A backend ``submit``s a unit and ``wait``s for the
next one to finish; the local ones run one unit at a time (``capacity`` 1). Checkpoints of long
units go to ``<checkpoint_dir>/<study>`` (``checkpoint_dir`` or ``$EFFX_CHECKPOINT_DIR``; default
``data/results/checkpoints``; on a cluster, a path every worker can reach).
"""
from __future__ import annotations

import os
import sys
from collections import deque
from pathlib import Path
from dataclasses import dataclass, field

from effx.errors import ParameterError
from effx.results import ResultStore
from effx.runner.local import InlineBackend, Outcome, ProcessBackend, default_limit_bytes
from effx.runner.progress import Progress
from effx.study import FINAL, Record, Study, Unit

BACKENDS = ("process", "inline", "ray")
CHECKPOINT_ENV = "EFFX_CHECKPOINT_DIR"      # a checkpoint root every worker can reach


@dataclass
class RunSummary:
    study: str
    profile: str
    units: int = 0
    resumed: int = 0
    executed: int = 0
    oom: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)   # (unit label, error)
    seconds: float = 0.0

    def __str__(self) -> str:
        text = (f"{self.study}: {self.units} units: {self.resumed} already recorded, "
                f"{self.executed} executed, {self.oom} out of memory, {self.skipped} skipped, "
                f"{len(self.failed)} failed, in {self.seconds:.1f} s")
        return text + "".join(f"\n  FAILED {label}: {err}" for label, err in self.failed)


def unit_done(records: list[dict], P: dict) -> bool:
    """True when a unit's stored records need no new execution under the parameters ``P``."""
    if not records or any(r["status"] not in FINAL for r in records):
        return False
    budget = P.get("budget_s")
    for r in records:     # stopped by a time budget smaller than today's: measure again
        stopped = r.get("info", {}).get("stopped_by_budget_s")
        if stopped is not None and budget is not None and budget > stopped:
            return False
    return True


def coverage(study: Study, P: dict, store: ResultStore) -> list[dict]:
    """Every unit ``P`` plans, with its recorded status in ``store`` ("not run" when nothing is
    recorded; else "ok" or the failure's status): how much of a plan (e.g. a committed reference
    profile) was carried out. One dict per unit: its key, ``unit`` (label) and ``status``."""
    by_unit = store.records_by_unit()
    rows = []
    for u in study.units(P):
        statuses = [r["status"] for r in by_unit.get(u.id, [])]
        status = next((s for s in statuses if s != "ok"), "ok") if statuses else "not run"
        rows.append({**u.key, "unit": u.label, "status": status})
    return rows


def make_backend(name: str, P: dict, log, address: str | None = None, output: str | None = None,
                 tick=lambda: None):
    if name == "process":
        return ProcessBackend(default_limit_bytes(P.get("memory_limit_gb")), log=log, output=output,
                              tick=tick)
    if name == "inline":
        return InlineBackend(log=log)
    if name == "ray":
        from effx.runner.ray import RayBackend
        return RayBackend(address=address, limit_bytes=default_limit_bytes(P.get("memory_limit_gb")),
                          log=log)
    raise ParameterError("runner", name, ", ".join(BACKENDS))


def _unit_records(outcome: Outcome) -> list[Record]:
    """The records to store for an outcome: the unit's own, or one record saying what happened."""
    unit, info = outcome.unit, dict(outcome.info)
    if outcome.status == "done":
        out = []
        for rec in outcome.records:
            rec.info = {**{k: v for k, v in info.items() if k != "traceback"}, **rec.info}
            out.append(rec)
        if not out:
            out.append(Record(point=unit.key, status="failed",
                              info=dict(info, error="the unit returned no records")))
        return out
    return [Record(point=unit.key, status=outcome.status,
                   info=dict(info, unit_oom=True) if outcome.status == "oom" else info)]


def run_study(study: Study, P: dict, *, backend: str = "process", store: ResultStore | None = None,
              address: str | None = None, checkpoint_dir: str | None = None,
              stream=None) -> RunSummary:
    """Execute every unit of ``study`` under ``P`` that is not recorded yet; see module docstring."""
    import time
    if not study.measures:
        return RunSummary(study.name, P["profile"])
    store = store or ResultStore(study.name, P["profile"])
    units = study.units(P)
    ids = [u.id for u in units]
    if len(set(ids)) != len(ids):
        raise ValueError(f"study {study.name!r}: two units have the same key")
    by_unit = store.records_by_unit()
    todo = [u for u in units if not unit_done(by_unit.get(u.id, []), P)]
    summary = RunSummary(study.name, P["profile"], units=len(units), resumed=len(units) - len(todo))
    progress = Progress(study.name, [u.cost_s for u in todo], resumed=summary.resumed, stream=stream)
    if not todo:
        progress.close()
        return summary
    t0 = time.perf_counter()
    store.start_run(P, device=str(P.get("device", "cpu")), threads=P.get("threads"))
    stopped = {r["unit_series"] for recs in by_unit.values() for r in recs
               if r.get("info", {}).get("unit_oom") and r.get("unit_series")}
    queues: dict[str, deque[Unit]] = {}
    for u in todo:
        queues.setdefault(u.series, deque()).append(u)
    root = checkpoint_dir or os.environ.get(CHECKPOINT_ENV)
    checkpoints = Path(root) / study.name if root else store.folder.parent / "checkpoints" / study.name
    output = store.folder / "logs" / f"{study.name}.log"       # the worker's own output
    engine = make_backend(backend, P, progress.note, address, str(output), progress.tick)
    inflight: dict[str, tuple[Unit, object]] = {}              # series -> (unit, handle)
    try:
        while queues or inflight:
            started = False
            for series in list(queues):                        # start what may start
                if series in inflight or len(inflight) >= engine.capacity:
                    continue
                unit = queues[series][0]
                waiting = [d for d in unit.after if not unit_done(by_unit.get(d, []), P)]
                if waiting and not any(by_unit.get(d) is None or
                                       by_unit[d][0]["status"] != "failed" for d in waiting):
                    waiting = []      # every unit it waits for failed: run it, it says what failed
                if waiting:
                    continue
                queues[series].popleft()
                if not queues[series]:
                    del queues[series]
                if series and series in stopped:
                    store.record_unit(unit.id, [Record(point=unit.key, status="skipped_after_oom",
                                                       info={"reason": "an earlier unit of this "
                                                             "series ran out of memory"})],
                                      series=series)
                    summary.skipped += 1
                    progress.finish(unit.cost_s, started=False)
                    continue
                progress.start(unit.label, unit.cost_s)
                earlier = [r for recs in by_unit.values() for r in recs
                           if series and r.get("unit_series") == series]
                inflight[series] = (unit, engine.submit(study, unit, P, earlier, str(checkpoints)))
                started = True
            if not inflight and not started and queues:
                raise RuntimeError(f"study {study.name!r}: units wait for units that are not "
                                   "in the plan: " + ", ".join(q[0].label for q in queues.values()))
            if not inflight:
                continue
            series, outcome = engine.wait(inflight)            # the next unit to finish
            unit, _ = inflight.pop(series)
            records = _unit_records(outcome)
            by_unit[unit.id] = store.record_unit(unit.id, records, series=series)
            summary.executed += 1
            if outcome.status == "oom":
                summary.oom += 1
                if series:
                    stopped.add(series)
            summary.failed += [(unit.label, r.info.get("error", "?")) for r in records
                               if r.status == "failed"]
            progress.finish(unit.cost_s)
    finally:
        engine.close()
        progress.close()
    summary.seconds = time.perf_counter() - t0
    for label, err in summary.failed:
        print(f"[{study.name}] FAILED {label}: {err}", file=stream or sys.stderr, flush=True)
    return summary
