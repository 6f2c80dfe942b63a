"""The results store: tidy, resumable, atomic, with provenance.

Layout, one folder per parameter profile:

    data/results/<profile>/<study>.jsonl   one JSON record per measured point
    data/results/<profile>/runs.jsonl      one provenance record per run (commit, versions, ...)

A record is ``{"point": {...}, "status": ..., "metrics": {name: {"value", "unit", "samples"?}},
"info": {...}, "run_id": ..., "unit": ..., "unit_series": ..., "write": ...}``. ``point`` holds
every setting that defines the measurement; ``unit`` is the id of the unit of work that produced
it (``effx.study.Unit``): the runner writes all records of one unit in one atomic append, and a
later write of the same unit replaces the earlier one (a failed unit retried, a point measured
again with a larger time budget). Every write replaces the file atomically (temporary file +
``os.replace``) under a lock, so an interrupted run never leaves a torn file.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import tempfile
import uuid
from dataclasses import asdict, is_dataclass
from pathlib import Path

import pandas as pd

from effx.provenance import REPO_ROOT, RESULTS_PATHSPEC, new_run


def results_root() -> Path:
    return Path(os.environ.get("EFFX_RESULTS_DIR", REPO_ROOT / RESULTS_PATHSPEC))


def point_key(point: dict) -> str:
    """Canonical text of a point: its identity."""
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


def append_records(path: Path, records: list[dict]) -> None:
    """Append records in one step: the file is rewritten to a temporary and renamed over the old."""
    with _locked(path):
        old = path.read_text() if path.exists() else ""
        if old and not old.endswith("\n"):
            old += "\n"
        new = "".join(json.dumps(_clean(r), sort_keys=True) + "\n" for r in records)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(old + new)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def append_record(path: Path, record: dict) -> None:
    append_records(path, [record])


def metric(value: float, unit: str, samples=None) -> dict:
    """A metric entry: the value (median when samples are given), its unit, and the raw samples."""
    entry = {"value": float(value), "unit": unit}
    if samples is not None:
        entry["samples"] = [float(s) for s in samples]
    return entry


def latest(records: list[dict]) -> list[dict]:
    """The records that stand: per unit its latest write; records without a unit (written before
    units existed), the latest per point."""
    by_unit: dict[str, tuple[str, list[dict]]] = {}
    by_point: dict[str, dict] = {}
    for rec in records:
        unit = rec.get("unit")
        if unit is None:
            by_point[point_key(rec["point"])] = rec
            continue
        write = rec.get("write", "")
        if unit not in by_unit or by_unit[unit][0] != write:
            by_unit[unit] = (write, [])
        by_unit[unit][1].append(rec)
    return list(by_point.values()) + [r for _, recs in by_unit.values() for r in recs]


class ResultStore:
    """Results of one study under one profile."""

    def __init__(self, study: str, profile: str, root: Path | str | None = None):
        self.study, self.profile = study, profile
        self.folder = Path(root or results_root()) / profile
        self.path = self.folder / f"{study}.jsonl"
        self.runs_path = self.folder / "runs.jsonl"
        self.run: dict | None = None

    # -- writing -------------------------------------------------------------------------------
    def start_run(self, params: dict, device: str = "cpu", threads: int | None = None) -> dict:
        """Write a provenance record; records written afterwards point at it."""
        self.run = new_run(self.study, self.profile, params, device, threads)
        append_record(self.runs_path, self.run)
        return self.run

    def record_unit(self, unit: str, records: list, series: str = "") -> list[dict]:
        """Store all records of one unit's execution at once; returns them as stored."""
        if self.run is None:
            raise RuntimeError("call start_run(params) first: every record needs provenance")
        write = uuid.uuid4().hex[:12]
        rows = []
        for r in records:
            r = asdict(r) if is_dataclass(r) else dict(r)
            rows.append({**r, "run_id": self.run["run_id"], "unit": unit, "unit_series": series,
                         "write": write})
        append_records(self.path, rows)
        return [json.loads(json.dumps(_clean(r), sort_keys=True)) for r in rows]

    # -- reading -------------------------------------------------------------------------------
    def records(self) -> list[dict]:
        return latest(read_jsonl(self.path))

    def records_by_unit(self) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for rec in self.records():
            if rec.get("unit") is not None:
                out.setdefault(rec["unit"], []).append(rec)
        return out

    def runs(self) -> dict[str, dict]:
        """This study's runs (the profile's runs.jsonl is shared by every study)."""
        return {r["run_id"]: r for r in read_jsonl(self.runs_path)
                if r.get("study", self.study) == self.study}

    def latest_params(self) -> dict:
        """The parameters of the latest run that wrote records here (how a reference run was made)."""
        used = {r.get("run_id") for r in self.records()}
        runs = [r for r in self.runs().values() if r["run_id"] in used]
        if not runs:
            raise LookupError(f"no run of '{self.study}' wrote records to {self.path}")
        return dict(runs[-1]["params"])                # runs.jsonl is appended in time order

    def exists(self) -> bool:
        return self.path.exists()

    def table(self, with_provenance: bool = True, only: list[dict] | None = None) -> pd.DataFrame:
        """Tidy table: one row per (point, metric); points without metrics give one row
        (metric None). ``info`` fields become ``info_<name>`` columns; ``samples`` holds the raw
        repeats. only: restrict to these points (e.g. the points of the current parameters)."""
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
                base.update(commit=run["commit"], date=run["date"], device_name=device_name(run),
                            torch_version=run["versions"]["torch"])
            if not rec["metrics"]:
                rows.append(dict(base, metric=None, value=float("nan"), unit=None, samples=[]))
            for name, m in rec["metrics"].items():
                samples = m.get("samples") or []
                row = dict(base, metric=name, value=m["value"], unit=m.get("unit"),
                           n=len(samples), samples=samples)
                if samples:
                    s = pd.Series(samples)
                    row.update(q25=s.quantile(0.25), q75=s.quantile(0.75))
                rows.append(row)
        return pd.DataFrame(rows)


def device_name(run: dict) -> str:
    hw = run.get("hardware", {})
    return hw.get("gpu_name") or hw.get("cpu_model", "?")


def provenance_summary(store: ResultStore, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per run that contributed rows: date, commit, device, threads, load, versions."""
    table = store.table() if table is None else table
    used = set(table["run_id"]) if len(table) else set()
    rows = []
    for run_id, run in store.runs().items():
        if run_id not in used:
            continue
        hw, ver = run["hardware"], run["versions"]
        rows.append({"run": run_id, "date": run["date"], "commit": run["commit"][:12]
                     + ("+dirty" if run["commit"].endswith("+dirty") else ""),
                     "device": device_name(run), "host": hw.get("host"),
                     "threads": hw.get("torch_threads"), "load (1 min)": hw.get("load_1min"),
                     "torch": ver["torch"], "triton": ver.get("triton"), "effx": ver["effx"],
                     "rows": int((table.run_id == run_id).sum())})
    return pd.DataFrame(rows)


def merge_folders(sources: list[Path], dest: Path) -> dict:
    """Merge results folders of one profile brought back from several machines into ``dest``.

    Every unit (or, for records written before units, every point) is kept once: when several
    folders hold it, the write of the latest run wins and the others are reported as conflicts
    (with their status and run); every run record is kept (provenance). Returns
    {"records": n, "runs": n, "conflicts": [{"file", "unit", "kept", "dropped"}]}.
    """
    dest = Path(dest)
    report = {"records": 0, "runs": 0, "conflicts": []}
    folders = [Path(s) for s in sources] + ([dest] if dest.exists() else [])
    runs: dict[str, dict] = {}
    for folder in folders:
        for run in read_jsonl(folder / "runs.jsonl"):
            runs.setdefault(run["run_id"], run)
    names = sorted({p.name for f in folders for p in f.glob("*.jsonl")} - {"runs.jsonl"})
    merged_files = {}
    for name in names:
        groups: dict[str, dict[str, list[dict]]] = {}     # identity -> write -> records
        for folder in folders:
            for rec in read_jsonl(folder / name):
                ident = rec.get("unit") or point_key(rec.get("point", rec))
                groups.setdefault(ident, {}).setdefault(rec.get("write") or rec.get("run_id", ""),
                                                        []).append(rec)
        out = []
        for ident, writes in groups.items():
            def date(recs):
                return runs.get(recs[0].get("run_id"), {}).get("date", "")
            ordered = sorted(writes.values(), key=date)
            keep = ordered[-1]
            if len(ordered) > 1:
                report["conflicts"].append({"file": name, "unit": ident[:200],
                                            "kept": f"{keep[0]['status']} ({keep[0].get('run_id')})",
                                            "dropped": [f"{w[0]['status']} ({w[0].get('run_id')})"
                                                        for w in ordered[:-1]]})
            out += keep
        merged_files[name] = out
        report["records"] += len(out)
    dest.mkdir(parents=True, exist_ok=True)
    for name, recs in merged_files.items():
        _rewrite(dest / name, recs)
    _rewrite(dest / "runs.jsonl", list(runs.values()))
    report["runs"] = len(runs)
    return report


def _rewrite(path: Path, records: list[dict]) -> None:
    with _locked(path):
        tmp = path.with_name(path.name + ".merge.tmp")
        tmp.write_text("".join(json.dumps(_clean(r), sort_keys=True) + "\n" for r in records))
        os.replace(tmp, path)
