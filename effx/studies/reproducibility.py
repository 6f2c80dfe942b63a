"""The reproducibility page: which machine built the book, with which versions, how long it took."""
from __future__ import annotations

import platform

import pandas as pd

from effx.provenance import git_commit, hardware, versions
from effx.results import read_jsonl, results_root

PARAMETERS: dict = {}


def build_environment(device: str = "cpu") -> pd.DataFrame:
    info = {"commit": git_commit(), "platform": platform.platform(), **hardware(device), **versions()}
    return pd.DataFrame({"item": list(info), "value": [str(v) for v in info.values()]})


def execution_times(profile: str) -> pd.DataFrame:
    """Latest execution of each notebook under `profile` (from data/results/<profile>/execution.jsonl)."""
    rows = read_jsonl(results_root() / profile / "execution.jsonl")
    if not rows:
        return pd.DataFrame(columns=["notebook", "seconds", "status", "date", "commit"])
    df = pd.DataFrame(rows).drop_duplicates("notebook", keep="last")
    return df[["notebook", "seconds", "status", "date", "commit"]].reset_index(drop=True)


def result_files() -> pd.DataFrame:
    """Every results file present, per profile: how many points and runs, and from which devices."""
    rows = []
    root = results_root()
    for folder in sorted(d for d in root.glob("*") if d.is_dir()):
        runs = {r["run_id"]: r for r in read_jsonl(folder / "runs.jsonl")}
        for path in sorted(folder.glob("*.jsonl")):
            if path.name in ("runs.jsonl", "execution.jsonl"):
                continue
            recs = read_jsonl(path)
            used = [runs[r["run_id"]] for r in recs if r["run_id"] in runs]
            devices = sorted({u["hardware"].get("gpu_name", u["hardware"]["cpu_model"]) for u in used})
            dates = sorted(u["date"] for u in used)
            rows.append({"profile": folder.name, "study": path.stem, "points": len(recs),
                         "runs": len({r["run_id"] for r in recs}), "devices": "; ".join(devices),
                         "first": dates[0] if dates else "", "last": dates[-1] if dates else ""})
    return pd.DataFrame(rows)
