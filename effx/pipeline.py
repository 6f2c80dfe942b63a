"""The pipeline: execute study notebooks with papermill under a parameter profile.

    python -m effx.pipeline run [--profile auto|quick|gpu|tiny|...] [--only NAME ...]
                                [--out DIR] [-p NAME VALUE ...]
    python -m effx.pipeline measure [--profile ...] [--only NAME ...] [-p NAME VALUE ...]
    python -m effx.pipeline list

Profiles live in ``notebooks/profiles/<notebook>.toml``, one table per profile. ``auto`` means
``gpu`` when CUDA is present, else ``quick``. Executed notebooks land in ``book/generated/``
(the book reads them; jupyter-book itself executes nothing). Every execution appends its wall
time and status to ``data/results/<profile>/execution.jsonl`` for the reproducibility page.
Parameters are validated before any kernel starts, so a bad value fails in a second with one
message naming the parameter.

``measure`` runs only the sweeps of the studies that measure something, in plain Python (no
Jupyter): what a GPU machine without the book's toolchain needs. The notebooks later render
those results from the store.
"""
from __future__ import annotations

import argparse
import ast
import datetime as dt
import sys
import time
import tomllib
from pathlib import Path

from effx.errors import ParameterError
from effx.provenance import REPO_ROOT, git_commit
from effx.results import append_record, results_root

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
PROFILES_DIR = NOTEBOOKS_DIR / "profiles"
GENERATED_DIR = REPO_ROOT / "book" / "generated"

#: notebooks in book order; the last ones summarise the others
ORDER = ["attention_scaling", "tipping_points", "cost_breakdown", "transkimmer_glue", "reproducibility"]


def notebooks() -> list[str]:
    present = {p.stem for p in NOTEBOOKS_DIR.glob("*.ipynb")}
    return [n for n in ORDER if n in present] + sorted(present - set(ORDER))


def resolve_profile(profile: str) -> str:
    if profile == "auto":
        from effx.device import cuda_available
        return "gpu" if cuda_available() else "quick"
    return profile


def profile_params(name: str, profile: str) -> dict:
    path = PROFILES_DIR / f"{name}.toml"
    tables = tomllib.loads(path.read_text()) if path.exists() else {}
    if profile not in tables:
        raise ParameterError("profile", profile, ", ".join(sorted(tables)) or "(none defined)",
                             why=f"{path.relative_to(REPO_ROOT)} has no [{profile}] table")
    return dict(tables[profile])


def parse_value(text: str):
    """`-p` values: Python literals ([512, 1024], 3, 'cpu', True) or else plain strings."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def check_parameters(name: str, params: dict) -> None:
    """Validate before starting a kernel (studies without a schema validate in the notebook)."""
    from effx import params as effx_params
    from effx.studies import STUDIES
    if name in STUDIES:
        effx_params.validate(name, params)


def run_notebook(name: str, profile: str, overrides: dict, out_dir: Path) -> float:
    import papermill as pm
    params = dict(profile_params(name, profile), **overrides, profile=profile)
    check_parameters(name, params)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    status = "ok"
    try:
        pm.execute_notebook(str(NOTEBOOKS_DIR / f"{name}.ipynb"), str(out_dir / f"{name}.ipynb"),
                            parameters=params, cwd=str(NOTEBOOKS_DIR), progress_bar=False,
                            kernel_name="python3")
    except pm.PapermillExecutionError as exc:
        status = f"failed: {exc.ename}: {exc.evalue}"
        raise SystemExit(f"notebook '{name}' failed ({exc.ename}): {exc.evalue}\n"
                         f"  executed copy with the traceback: {out_dir / (name + '.ipynb')}")
    finally:
        seconds = time.perf_counter() - t0
        append_record(results_root() / profile / "execution.jsonl",
                      {"notebook": name, "profile": profile, "seconds": round(seconds, 1),
                       "status": status, "commit": git_commit(), "overrides": overrides,
                       "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
    return seconds


def measure_study(name: str, profile: str, overrides: dict) -> float:
    """Validate the profile's parameters and run the study's sweep without a notebook."""
    from effx import params as effx_params
    from effx.profiling.sweep import sweep_study
    P = effx_params.validate(name, dict(profile_params(name, profile), **overrides, profile=profile))
    t0 = time.perf_counter()
    _, counts = sweep_study(name, P)
    seconds = time.perf_counter() - t0
    print(f"  {name}: {counts}", flush=True)
    return seconds


def measurable(name: str) -> bool:
    from effx.studies import STUDIES
    return name in STUDIES and hasattr(STUDIES[name], "points") and hasattr(STUDIES[name], "measure")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m effx.pipeline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute notebooks")
    run.add_argument("--profile", default="auto")
    run.add_argument("--only", nargs="*", default=None, metavar="NAME")
    run.add_argument("--out", type=Path, default=GENERATED_DIR)
    run.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    meas = sub.add_parser("measure", help="run the studies' sweeps without notebooks")
    meas.add_argument("--profile", default="auto")
    meas.add_argument("--only", nargs="*", default=None, metavar="NAME")
    meas.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    sub.add_parser("list", help="list notebooks and their profiles")
    args = ap.parse_args(argv)

    if args.command == "list":
        for name in notebooks():
            path = PROFILES_DIR / f"{name}.toml"
            tables = sorted(tomllib.loads(path.read_text())) if path.exists() else []
            print(f"{name:20s} profiles: {', '.join(tables)}")
        return 0

    try:
        profile = resolve_profile(args.profile)
        names = notebooks() if args.command == "run" else [n for n in notebooks() if measurable(n)]
        chosen = args.only or names
        for name in chosen:
            if name not in names:
                raise ParameterError("NB", name, ", ".join(names))
        overrides = {k: parse_value(v) for k, v in args.p}
        if overrides and len(chosen) != 1:
            raise ParameterError("PARAMS", overrides, "parameters for exactly one notebook (NB=...)")
        print(f"effx: profile '{profile}', {args.command}: {', '.join(chosen)}", flush=True)
        total = 0.0
        for name in chosen:
            print(f"  {args.command} {name} ...", flush=True)
            if args.command == "run":
                seconds = run_notebook(name, profile, overrides, args.out)
            else:
                seconds = measure_study(name, profile, overrides)
            total += seconds
            print(f"  {name}: {seconds:.1f} s", flush=True)
        where = args.out if args.command == "run" else results_root() / profile
        print(f"effx: {len(chosen)} in {total:.1f} s -> {where}", flush=True)
    except ParameterError as exc:
        print(f"effx: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
