"""The reproducibility page: the machine and software of this build, each notebook's time against
its share of the 20-minute build, and every results file with the hosts and devices behind it."""
from __future__ import annotations

import platform

import pandas as pd

from effx.provenance import git_commit, hardware, versions
from effx.results import read_jsonl, results_root
from effx.study import Study


def build_environment(device: str = "cpu") -> pd.DataFrame:
    info = {"commit": git_commit(), "platform": platform.platform(), **hardware(device), **versions()}
    return pd.DataFrame({"item": list(info), "value": [str(v) for v in info.values()]})


def execution_times(profile: str) -> pd.DataFrame:
    """Latest execution of each notebook under ``profile``, with its share of the build."""
    from effx.studies import registry
    rows = read_jsonl(results_root() / profile / "execution.jsonl")
    shares = {name: s.share_s for name, s in registry().items()}
    cols = ["notebook", "seconds", "share_s", "status", "error", "date", "commit"]
    if not rows:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(rows).drop_duplicates("notebook", keep="last")
    df["share_s"] = df.notebook.map(shares)
    for c in cols:
        if c not in df:
            df[c] = None
    return df[cols].reset_index(drop=True)


def result_files() -> pd.DataFrame:
    """Every results file, per profile: points, runs, and the hosts and devices that made them."""
    rows = []
    root = results_root()
    for folder in sorted(d for d in root.glob("*") if d.is_dir() and d.name != "checkpoints"):
        runs = {r["run_id"]: r for r in read_jsonl(folder / "runs.jsonl")}
        for path in sorted(folder.glob("*.jsonl")):
            if path.name in ("runs.jsonl", "execution.jsonl"):
                continue
            recs = read_jsonl(path)
            used = [runs[r["run_id"]] for r in recs if r.get("run_id") in runs]
            hosts = sorted({str(r.get("info", {}).get("host") or "") for r in recs} - {""})
            devices = sorted({u["hardware"].get("gpu_name") or u["hardware"]["cpu_model"]
                              for u in used})
            dates = sorted(u["date"] for u in used)
            rows.append({"profile": folder.name, "study": path.stem, "records": len(recs),
                         "runs": len({r.get("run_id") for r in recs}),
                         "hosts": "; ".join(hosts) or "(not recorded)",
                         "devices": "; ".join(devices), "first": dates[0][:10] if dates else "",
                         "last": dates[-1][:10] if dates else ""})
    return pd.DataFrame(rows)


STUDY = Study(name="reproducibility", title="Reproducibility", part="About this book",
              position=90, parameters={}, share_s=10)
