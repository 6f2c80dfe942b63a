"""The results store: tidy, resumable, atomic, with provenance.

Layout, one folder per parameter profile:

    data/results/<profile>/<study>.jsonl   one JSON record per measured point
    data/results/<profile>/runs.jsonl      one provenance record per run (commit, versions, ...)

A point record is ``{"point": {...}, "status": "ok"|"oom"|..., "metrics": {name: {...}},
"info": {...}, "run_id": ...}``. ``point`` holds every parameter that defines the measurement
(model, device, dtype, mode, batch, length, ...); it is the key a rerun uses to skip work already
done. Every write replaces the file atomically (temporary file + ``os.replace``) under a lock, so an
interrupted run never leaves a torn file and loses nothing already written.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import tempfile
from pathlib import Path

import pandas as pd

from effx.provenance import REPO_ROOT, new_run

#: statuses that count as "this point is done" on resume; anything else is measured again
FINAL_STATUSES = ("ok", "oom", "over_budget", "skipped_after_oom", "unsupported")


def results_root() -> Path:
    return Path(os.environ.get("EFFX_RESULTS_DIR", REPO_ROOT / "data" / "results"))


def point_key(point: dict) -> str:
    """Canonical text of a point: the identity used for resume."""
    return json.dumps(point, sort_keys=True, default=str)


def _clean(value):
    """JSON-safe floats (NaN/inf become None) and plain Python types."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _clean(value.item())
    return value


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(path.suffix + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_record(path: Path, record: dict) -> None:
    """Append one record by rewriting the file to a temporary and renaming it over the old one."""
    with _locked(path):
        old = path.read_text() if path.exists() else ""
        if old and not old.endswith("\n"):
            old += "\n"
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(old + json.dumps(_clean(record), sort_keys=True) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def metric(value: float, unit: str, samples=None) -> dict:
    """A metric entry: the value (median when samples are given), its unit, and the raw samples."""
    entry = {"value": float(value), "unit": unit}
    if samples is not None:
        entry["samples"] = [float(s) for s in samples]
    return entry


class ResultStore:
    """Results of one study under one profile."""

    def __init__(self, study: str, profile: str, root: Path | str | None = None):
        self.study, self.profile = study, profile
        self.folder = Path(root or results_root()) / profile
        self.path = self.folder / f"{study}.jsonl"
        self.runs_path = self.folder / "runs.jsonl"
        self.run: dict | None = None

    # -- writing -------------------------------------------------------------------------------
    def start_run(self, params: dict, device: str = "cpu") -> dict:
        """Write a provenance record; rows recorded afterwards point at it."""
        self.run = new_run(self.study, self.profile, params, device)
        append_record(self.runs_path, self.run)
        return self.run

    def record(self, point: dict, metrics: dict | None = None, status: str = "ok",
               info: dict | None = None) -> dict:
        if self.run is None:
            raise RuntimeError("call start_run(params) before record(): every row needs provenance")
        rec = {"point": point, "status": status, "metrics": metrics or {}, "info": info or {},
               "run_id": self.run["run_id"]}
        append_record(self.path, rec)
        return rec

    # -- reading -------------------------------------------------------------------------------
    def records(self) -> list[dict]:
        """All records, the latest per point winning (a point measured again replaces the old)."""
        latest: dict[str, dict] = {}
        for rec in read_jsonl(self.path):
            latest[point_key(rec["point"])] = rec
        return list(latest.values())

    def done_keys(self) -> set[str]:
        return {point_key(r["point"]) for r in self.records() if r["status"] in FINAL_STATUSES}

    def is_done(self, point: dict) -> bool:
        return point_key(point) in self.done_keys()

    def runs(self) -> dict[str, dict]:
        return {r["run_id"]: r for r in read_jsonl(self.runs_path)}

    def table(self, with_provenance: bool = True, only: list[dict] | None = None) -> pd.DataFrame:
        """Tidy table: one row per (point, metric). Points without metrics give one row (metric=None).

        only: restrict to these points (e.g. the points of the current parameters).
        """
        runs = self.runs() if with_provenance else {}
        wanted = None if only is None else {point_key(p) for p in only}
        rows = []
        for rec in self.records():
            if wanted is not None and point_key(rec["point"]) not in wanted:
                continue
            base = dict(rec["point"], status=rec["status"], run_id=rec["run_id"])
            base.update({f"info_{k}": v for k, v in rec.get("info", {}).items()})
            if with_provenance and rec["run_id"] in runs:
                run = runs[rec["run_id"]]
                base.update(commit=run["commit"], date=run["date"],
                            device_name=run["hardware"].get("gpu_name", run["hardware"]["cpu_model"]),
                            torch_version=run["versions"]["torch"])
            if not rec["metrics"]:
                rows.append(dict(base, metric=None, value=float("nan"), unit=None))
            for name, m in rec["metrics"].items():
                samples = m.get("samples") or []
                row = dict(base, metric=name, value=m["value"], unit=m.get("unit"), n=len(samples))
                if samples:
                    s = pd.Series(samples)
                    row.update(q25=s.quantile(0.25), q75=s.quantile(0.75))
                rows.append(row)
        return pd.DataFrame(rows)

    def samples(self) -> dict[str, dict[str, list[float]]]:
        """Raw repeats per point key and metric (for bootstrap intervals)."""
        return {point_key(r["point"]): {k: m.get("samples", []) for k, m in r["metrics"].items()}
                for r in self.records()}


def load_table(study: str, profile: str, root: Path | str | None = None) -> pd.DataFrame:
    return ResultStore(study, profile, root).table()


def provenance_summary(store: ResultStore, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per run that contributed rows: when, which commit, which hardware and versions."""
    table = store.table() if table is None else table
    used = set(table["run_id"]) if len(table) else set()
    rows = []
    for run_id, run in store.runs().items():
        if run_id not in used:
            continue
        hw, ver = run["hardware"], run["versions"]
        rows.append({"run": run_id, "date": run["date"], "commit": run["commit"][:12] + ("+dirty" if run["commit"].endswith("+dirty") else ""),
                     "device": hw.get("gpu_name", hw["cpu_model"]), "threads": hw.get("torch_threads"),
                     "torch": ver["torch"], "triton": ver.get("triton"), "effx": ver["effx"],
                     "points": int((table.run_id == run_id).sum())})
    return pd.DataFrame(rows)
