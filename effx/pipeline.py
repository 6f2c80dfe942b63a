"""The pipeline: every study of the registry (``effx.studies``), as notebooks or as plain sweeps.

    python -m effx.pipeline run      [--profile auto|quick|gpu|tiny|full] [--only NAME ...]
                                     [--out DIR] [-p NAME VALUE ...] [--runner process|inline|ray]
    python -m effx.pipeline measure  [same options]      the studies' units, without Jupyter
    python -m effx.pipeline plan     [--profile ...]     units per study and estimated time
    python -m effx.pipeline list                         studies, profiles, time shares
    python -m effx.pipeline merge    SRC [SRC ...] --into DEST   results folders from several
                                                         machines into one (conflicts reported)
    python -m effx.pipeline toc      [--check]           write (or check) book/_toc.yml, and the
                                                         status table the methods page includes

A profile is a table in ``notebooks/profiles/<study>.toml`` holding only the values that differ
from the study's defaults; ``auto`` is ``gpu`` when CUDA is present, else ``quick``. Parameters
are validated before any kernel starts: a bad value stops with one message naming it. Executed
notebooks land in ``book/generated/``; each execution's time, status and cause of failure go to
``data/results/<profile>/execution.jsonl`` (the reproducibility page). While papermill runs a
notebook (capturing its output), the runner's progress line is mirrored to the terminal.
A failing notebook does not stop the others; the exit status says that one failed.
"""
from __future__ import annotations

import argparse
import ast
import datetime as dt
import os
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path

from effx.errors import ParameterError
from effx.provenance import REPO_ROOT, git_commit
from effx.results import append_record, results_root
from effx.runner.progress import PROGRESS_FILE_ENV, duration
from effx.studies import get_study, registry
from effx.study import Study

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
PROFILES_DIR = NOTEBOOKS_DIR / "profiles"
GENERATED_DIR = REPO_ROOT / "book" / "generated"
TOC_PATH = REPO_ROOT / "book" / "_toc.yml"
#: pages of the book that are not studies: (part, position, file)
STATIC_PAGES = (("Foundations", 0, "methods"), ("About this book", 100, "findings"))


def notebooks() -> list[str]:
    """Every study, in book order (each has notebooks/<name>.ipynb)."""
    return list(registry())


def resolve_profile(profile: str) -> str:
    if profile == "auto":
        from effx.device import cuda_available
        return "gpu" if cuda_available() else "quick"
    return profile


def profile_tables(name: str) -> dict:
    path = PROFILES_DIR / f"{name}.toml"
    return tomllib.loads(path.read_text()) if path.exists() else {}


def profile_values(study: Study, profile: str) -> dict:
    """The profile's values for a study (only those differing from its defaults)."""
    tables = profile_tables(study.name)
    if profile not in tables:
        raise ParameterError("profile", profile, ", ".join(sorted(tables)) or "(none defined)",
                             why=f"notebooks/profiles/{study.name}.toml has no [{profile}] table")
    return dict(tables[profile])


def parse_value(text: str):
    """`-p` values: Python literals ([512, 1024], 3, 'cpu', True) or else plain strings."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parameters(study: Study, profile: str, overrides: dict) -> dict:
    """The values to run with (profile + overrides, not yet defaulted), checked now."""
    values = dict(profile_values(study, profile), **overrides, profile=profile)
    study.validate(values)
    return values


class _Mirror(threading.Thread):
    """Prints the progress file's line whenever it changes (every few seconds)."""

    def __init__(self, path: Path, every_s: float = 5.0):
        super().__init__(daemon=True)
        self.path, self.every_s, self.stop = path, every_s, threading.Event()

    def run(self):
        last = ""
        while not self.stop.wait(self.every_s):
            try:
                line = self.path.read_text().strip()
            except OSError:
                continue
            if line and line != last:
                print(f"    {line}", flush=True)
                last = line


def run_notebook(study: Study, profile: str, overrides: dict, out_dir: Path,
                 runner: str = "process", notebook: Path | None = None) -> tuple[float, str]:
    """Execute one study's notebook; returns (seconds, status). Never raises for the notebook's
    own failure (a cell error, a dead kernel): that is recorded with its cause."""
    import papermill as pm
    values = dict(parameters(study, profile, overrides), runner=runner)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = notebook or NOTEBOOKS_DIR / f"{study.name}.ipynb"
    progress = Path(tempfile.mkstemp(prefix=f"effx-{study.name}-", suffix=".progress")[1])
    os.environ[PROGRESS_FILE_ENV] = str(progress)
    mirror = _Mirror(progress)
    mirror.start()
    t0, status, error = time.perf_counter(), "ok", None
    try:
        pm.execute_notebook(str(source), str(out_dir / f"{study.name}.ipynb"), parameters=values,
                            cwd=str(NOTEBOOKS_DIR), progress_bar=False, kernel_name="python3")
    except Exception as exc:  # noqa: BLE001 - any failure, a dead kernel included, is recorded
        status = "failed"
        error = (f"{exc.ename}: {exc.evalue}" if isinstance(exc, pm.PapermillExecutionError)
                 else f"{type(exc).__name__}: {exc}")[:2000]
    finally:
        mirror.stop.set()
        os.environ.pop(PROGRESS_FILE_ENV, None)
        progress.unlink(missing_ok=True)
        seconds = time.perf_counter() - t0
        append_record(results_root() / profile / "execution.jsonl",
                      {"notebook": study.name, "profile": profile, "seconds": round(seconds, 1),
                       "share_s": study.share_s, "status": status, "error": error,
                       "runner": runner, "commit": git_commit(), "overrides": overrides,
                       "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
    if error:
        print(f"  {study.name} FAILED: {error}\n  executed copy with the traceback: "
              f"{out_dir / (study.name + '.ipynb')}", flush=True)
    return seconds, status


def measure_study(study: Study, profile: str, overrides: dict, runner: str = "process",
                  address: str | None = None) -> tuple[float, str]:
    """A study's units without a notebook (e.g. on a GPU machine without Jupyter)."""
    from effx.runner import run_study
    P = study.validate(dict(parameters(study, profile, overrides), profile=profile))
    summary = run_study(study, P, backend=runner, address=address)
    print(f"  {summary}", flush=True)
    return summary.seconds, "ok" if not summary.failed else "failed"


def write_statuses(folder: Path) -> None:
    """The status table the methods page includes, from the one place each status is defined."""
    from effx.report import statuses_markdown
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "statuses.md").write_text(statuses_markdown())


def toc_text() -> str:
    """book/_toc.yml from the registry: parts in order, chapters by position."""
    from effx.study import PARTS
    pages = [(s.part, s.position, f"generated/{s.name}") for s in registry().values()]
    pages += list(STATIC_PAGES)
    lines = ["# Generated by `python -m effx.pipeline toc` from the study registry: do not edit.",
             "format: jb-book", "root: intro", "parts:"]
    for part in PARTS:
        files = [f for pt, _, f in sorted(pages, key=lambda x: x[1]) if pt == part]
        if files:
            lines += [f"  - caption: {part}", "    chapters:"] + [f"      - file: {f}" for f in files]
    return "\n".join(lines) + "\n"


def plan(names: list[str], profile: str, calibrate: str = "quick",
         speedup: float = 1.0, overrides: dict | None = None) -> list[dict]:
    """Units per study, those not yet recorded under ``profile`` (``left``: what a run would do)
    and the estimated seconds of those. A study's units carry relative costs (``cost_s``); the
    seconds per cost unit are calibrated on the units already recorded under ``calibrate`` (their
    measured ``info.seconds``), then divided by ``speedup`` (e.g. a GPU's advantage over the
    calibrating CPU, a rough guess the caller states)."""
    from effx.results import ResultStore
    rows = []
    for name in names:
        study = get_study(name)
        if not study.measures:
            continue
        P = study.validate(dict(parameters(study, profile, overrides or {}), profile=profile))
        units = study.units(P)
        recorded = ResultStore(name, profile).records_by_unit()
        left = [u for u in units if u.id not in recorded]
        rate = _seconds_per_cost(study, calibrate, ResultStore(name, calibrate))
        cost = sum(u.cost_s for u in left)
        rows.append({"study": name, "units": len(units), "left": len(left), "cost": cost,
                     "calibrated": rate is not None,
                     "estimate_s": (cost * rate / speedup) if rate is not None else None})
    return rows


def _seconds_per_cost(study: Study, profile: str, store) -> float | None:
    """Measured seconds per unit of ``cost_s`` over the recorded units of ``profile``."""
    try:
        P = study.validate(dict(parameters(study, profile, {}), profile=profile))
    except ParameterError:
        return None
    costs = {u.id: u.cost_s for u in study.units(P)}
    spent = cost = 0.0
    for unit, recs in store.records_by_unit().items():
        seconds = recs[0].get("info", {}).get("seconds")
        if unit in costs and seconds:
            spent, cost = spent + seconds, cost + costs[unit]
    return spent / cost if cost else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m effx.pipeline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    for cmd in ("run", "measure", "plan"):
        sp = sub.add_parser(cmd)
        sp.add_argument("--profile", default="auto")
        sp.add_argument("--only", nargs="*", default=None, metavar="NAME")
        sp.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
        sp.add_argument("--runner", default=os.environ.get("EFFX_RUNNER", "process"))
        sp.add_argument("--address", default=None, help="Ray cluster address (--runner ray)")
        sp.add_argument("--checkpoints", default=None,
                        help="checkpoint root every worker can reach (default data/results/checkpoints)")
        sp.add_argument("--out", type=Path, default=GENERATED_DIR)
        if cmd == "plan":
            sp.add_argument("--calibrate", default="quick",
                            help="profile whose recorded units give the seconds per cost unit")
            sp.add_argument("--speedup", type=float, default=1.0,
                            help="assumed speed of the target device over the calibrating one")
    sub.add_parser("list")
    merge = sub.add_parser("merge")
    merge.add_argument("sources", nargs="+", type=Path)
    merge.add_argument("--into", type=Path, required=True)
    toc = sub.add_parser("toc")
    toc.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    try:
        return _dispatch(args)
    except ParameterError as exc:
        print(f"effx: error: {exc}", file=sys.stderr)
        return 2


def _dispatch(args) -> int:
    if args.command == "list":
        for name, study in registry().items():
            tables = ", ".join(sorted(profile_tables(name)))
            print(f"{name:20s} {study.part:16s} share {study.share_s:4d} s  profiles: {tables}")
        return 0
    if args.command == "merge":
        from effx.results import merge_folders
        report = merge_folders(args.sources, args.into)
        print(f"effx: {report['records']} records, {report['runs']} runs -> {args.into}")
        for c in report["conflicts"]:
            print(f"  conflict in {c['file']}: kept {c['kept']}, dropped {', '.join(c['dropped'])}"
                  f" for {c['unit'][:120]}")
        return 0
    if args.command == "toc":
        if args.check:
            ok = TOC_PATH.exists() and TOC_PATH.read_text() == toc_text()
            print("book/_toc.yml matches the registry" if ok else
                  "book/_toc.yml is out of date: run `python -m effx.pipeline toc`")
            return 0 if ok else 1
        TOC_PATH.write_text(toc_text())
        write_statuses(GENERATED_DIR)
        return 0
    profile = resolve_profile(args.profile)
    names = [n for n, s in registry().items() if args.command == "run" or s.measures]
    if args.command == "measure" and profile == "gpu":      # the GPU session: most important first
        names.sort(key=lambda n: (registry()[n].gpu_priority is None, registry()[n].gpu_priority or 0))
        names = [n for n in names if registry()[n].gpu_priority is not None]
    chosen = args.only or names
    for name in chosen:
        if name not in names:
            raise ParameterError("NB", name, ", ".join(names))
    overrides = {k: parse_value(v) for k, v in args.p}
    if args.checkpoints:
        from effx.runner import CHECKPOINT_ENV
        os.environ[CHECKPOINT_ENV] = str(Path(args.checkpoints).resolve())
    if overrides and len(chosen) != 1:
        raise ParameterError("PARAMS", overrides, "parameters for exactly one notebook (NB=...)")
    if args.command == "plan":
        rows = plan(chosen, profile, args.calibrate, args.speedup, overrides)
        for r in rows:
            est = (f"~{duration(r['estimate_s'])}" if r["calibrated"]
                   else f"cost {r['cost']:.0f} (no '{args.calibrate}' records to calibrate on)")
            print(f"{r['study']:20s} {r['units']:4d} units, {r['left']:4d} not recorded  {est}")
        known = [r["estimate_s"] for r in rows if r["calibrated"]]
        print(f"total ~{duration(sum(known))} (calibrated on '{args.calibrate}', speedup "
              f"{args.speedup:g}x)")
        return 0
    for name in chosen:                     # every notebook's parameters, before any kernel starts
        parameters(get_study(name), profile, overrides)
    print(f"effx: profile '{profile}', {args.command}: {', '.join(chosen)}", flush=True)
    if args.command == "run":
        write_statuses(args.out)
    results, total = [], 0.0
    for name in chosen:
        study = get_study(name)
        print(f"  {args.command} {name} (share of the quick build: {study.share_s} s) ...", flush=True)
        if args.command == "run":
            seconds, status = run_notebook(study, profile, overrides, args.out, args.runner)
        else:
            seconds, status = measure_study(study, profile, overrides, args.runner, args.address)
        total += seconds
        results.append((name, seconds, study.share_s, status))
        print(f"  {name}: {seconds:.1f} s ({status})", flush=True)
    print(f"effx: {len(chosen)} notebooks in {total:.1f} s ({duration(total)}):")
    for name, seconds, share, status in results:
        print(f"  {name:20s} {seconds:7.1f} s  share {share:5d} s  {status}")
    failed = [r[0] for r in results if r[3] != "ok"]
    if failed:
        print(f"effx: FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
