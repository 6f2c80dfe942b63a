"""Analysis of the SPION study: one row per run, speed and memory, the claim compared, computed."""
from __future__ import annotations

import numpy as np
import pandas as pd

#: the paper's claims (arXiv 2309.12578 abstract; PAKDD 2024 version)
PAPER_SPEEDUP, PAPER_SPEEDUP_PAKDD = 3.08, 2.78


def runs(store, P: dict | None = None) -> pd.DataFrame:
    """One row per recorded run: accuracy, density, switch step, step times, memory, FLOPs,
    attention-alone speedup of its layouts over dense attention."""
    rows = []
    for rec in store.records():
        pt, m, info = rec["point"], rec["metrics"], rec.get("info", {})
        if "method" not in pt or (P is not None and (pt["task"] not in P["tasks"]
                                                     or pt["method"] not in P["methods"])):
            continue
        v = {k: x["value"] for k, x in m.items()}
        layers = [k for k in v if k.startswith("attention_s/layer")]
        alone = (v["attention_s/dense"] / np.mean([v[k] for k in layers])
                 if layers and "attention_s/dense" in v else np.nan)
        flops = info.get("attention_flops_forward") or {}
        rows.append({"task": pt["task"], "method": pt["method"], "seed": pt["seed"],
                     "length": pt["length"], "status": rec["status"],
                     "accuracy %": 100 * v.get("test_accuracy", np.nan),
                     "density": v.get("mean_density", np.nan),
                     "switched at": info.get("switched_at"),
                     "s/step dense": v.get("seconds_per_step/dense", np.nan),
                     "s/step sparse": v.get("seconds_per_step/sparse", np.nan),
                     "peak MiB dense": v.get("peak_memory/dense", np.nan) / 2**20,
                     "peak MiB sparse": v.get("peak_memory/sparse", np.nan) / 2**20,
                     "attention FLOPs / dense": flops.get("fraction_of_dense", np.nan)
                     if isinstance(flops, dict) else np.nan,
                     "attention alone speedup": alone})
    return pd.DataFrame(rows)


def speed(table: pd.DataFrame) -> pd.DataFrame:
    """Per task and method (mean over seeds): the sparse-phase step against the dense model's step
    (end to end) and the attention alone against dense attention."""
    if table.empty:
        return table
    dense = table[table.method == "dense"].groupby("task")["s/step dense"].mean()
    out = table.groupby(["task", "method"], as_index=False).mean(numeric_only=True)
    out["step speedup vs dense"] = [dense.get(t, np.nan) / s if pd.notna(s) else np.nan
                                    for t, s in zip(out.task, out["s/step sparse"])]
    return out[["task", "method", "density", "s/step dense", "s/step sparse",
                "step speedup vs dense", "attention alone speedup", "attention FLOPs / dense",
                "peak MiB dense", "peak MiB sparse"]]


def accuracy(table: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per task and method: mean over seeds, spread (min-max) and number of seeds."""
    if table.empty:
        return table
    g = table.groupby(["task", "method"])["accuracy %"]
    return pd.DataFrame({"accuracy % (mean)": g.mean(), "min": g.min(), "max": g.max(),
                         "seeds": g.count()}).reset_index()


def claims(table: pd.DataFrame) -> dict:
    """What the chapter compares with the paper, computed (keys glued as spion_<key>)."""
    out = {"paper_speedup": PAPER_SPEEDUP, "paper_speedup_pakdd": PAPER_SPEEDUP_PAKDD}
    sp = speed(table)
    for task in sorted(set(sp.task)) if len(sp) else []:
        row = sp[(sp.task == task) & (sp.method == "spion_cf")]
        if row.empty:
            continue
        r = row.iloc[0]
        out[f"{task}_step_speedup"] = float(r["step speedup vs dense"])
        out[f"{task}_alone_speedup"] = float(r["attention alone speedup"])
        out[f"{task}_density"] = float(r.density)
        acc = table[table.task == task].groupby("method")["accuracy %"].mean()
        for method in ("dense", "sliding_window", "bigbird"):
            if method in acc and "spion_cf" in acc:
                out[f"{task}_acc_vs_{method}"] = float(acc["spion_cf"] - acc[method])
        for method in ("sliding_window", "bigbird"):
            fixed = sp[(sp.task == task) & (sp.method == method)]
            if len(fixed) and pd.notna(fixed.iloc[0]["s/step sparse"]):
                out[f"{task}_step_vs_{method}"] = float(fixed.iloc[0]["s/step sparse"]
                                                        / r["s/step sparse"])
    return out


def switch_curve(store, task: str, method: str = "spion_cf") -> pd.DataFrame:
    """The dense-to-sparse rule over training: relative change of each layer's map distance at
    every capture step."""
    rows = []
    for rec in store.records():
        pt = rec["point"]
        if pt.get("task") != task or pt.get("method") != method:
            continue
        for cap in rec["info"].get("captures", []):
            for layer, change in enumerate(cap.get("changes") or []):
                rows.append({"seed": pt["seed"], "step": cap["step"], "layer": layer,
                             "relative change": change,
                             "switched at": rec["info"].get("switched_at")})
    return pd.DataFrame(rows)


def task_claim(c: dict, task: str, length, full: bool = False) -> str | None:
    """What ``claims`` says of one task in words (None: no SPION-CF run): density, the sparse
    step and the attention against dense, accuracy against dense; with ``full``, also the step
    against the fixed patterns and the accuracy against every other method."""
    if f"{task}_step_speedup" not in c:
        return None
    text = (f"on {task} ({length} tokens) SPION-CF kept {c[f'{task}_density']:.0%} of the "
            f"attention blocks; its sparse training step ran {c[f'{task}_step_speedup']:.2f}x as "
            f"fast as a dense step (end to end) and its attention "
            f"{c[f'{task}_alone_speedup']:.2f}x as fast as dense attention")
    if full:
        for m in ("sliding_window", "bigbird"):
            if f"{task}_step_vs_{m}" in c:
                text += (f"; against {m.replace('_', ' ')} at the same density, SPION's step is "
                         f"{c[f'{task}_step_vs_{m}']:.2f}x as fast")
    for m in ("dense", "sliding_window", "bigbird") if full else ("dense",):
        if f"{task}_acc_vs_{m}" in c:
            text += f"; accuracy {c[f'{task}_acc_vs_{m}']:+.1f} points against {m.replace('_', ' ')}"
    return text


def task_claims(c: dict, tasks, lengths: dict) -> str:
    """One bullet per task of ``tasks`` (``task_claim`` in full), for the chapter's comparison."""
    lines = []
    for task in tasks:
        text = task_claim(c, task, lengths.get(task, "?"), full=True)
        lines.append(f"- **{task}**: " + (f"{text}." if text else "no SPION-CF run recorded."))
    return "\n".join(lines)


def answer(c: dict, lengths: dict) -> str:
    """One paragraph for the introduction, from ``claims``: ``task_claim`` of every task run."""
    tasks = sorted({k.split("_")[0] for k in c if k.endswith("_step_speedup")})
    parts = [task_claim(c, task, lengths.get(task, "?")) for task in tasks]
    if not parts:
        return "No SPION run is recorded yet."
    return ("Measured on this machine's CPU, " + "; ".join(parts) + ". The paper's "
            f"{PAPER_SPEEDUP:.2f}x is a GPU speedup over other sparse-attention implementations; "
            "the chapter says why ours differ.")
