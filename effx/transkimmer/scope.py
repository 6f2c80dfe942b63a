"""What of a profile's plan is recorded, and what the plan leaves out of the issue's protocol:
the chapter's coverage table and its list of cuts, read from the plan's units
(``effx.runner.coverage``: one row per planned unit, its key's columns and ``status``)."""
from __future__ import annotations

import pandas as pd


def _frame(cov) -> pd.DataFrame:
    """The plan's units as a frame, with a ``measure`` column (None: a training job)."""
    cov = pd.DataFrame(cov)
    if len(cov) and "measure" not in cov:
        cov["measure"] = None
    return cov


def coverage_table(cov) -> pd.DataFrame:
    """Per task, how much of a profile's plan is recorded: training jobs and wall-clock units done
    out of planned, and the jobs not yet run (count per method); failures among all units.
    ``cov``: one row per planned unit with its key's columns, ``unit`` (label) and ``status``
    (``effx.runner.coverage``)."""
    cov = _frame(cov)
    if cov.empty:
        return pd.DataFrame(columns=["task", "jobs", "wall clock", "failed", "jobs not yet run"])
    rows = []
    for task, g in cov.groupby("task", sort=False):        # removal-path timings: neither
        jobs, clocks = g[g.measure.isna()], g[g.measure.eq("wall_clock")]
        todo = jobs.method[jobs.status == "not run"].value_counts(sort=False)
        rows.append({"task": task, "jobs": f"{(jobs.status == 'ok').sum()} of {len(jobs)}",
                     "wall clock": f"{(clocks.status == 'ok').sum()} of {len(clocks)}",
                     "failed": int((~g.status.isin(["ok", "not run"])).sum()),
                     "jobs not yet run": ", ".join(f"{m} {n}" for m, n in todo.items())})
    return pd.DataFrame(rows)


def _numbers(values) -> str:
    return ", ".join(f"{v:g}" for v in sorted(values))


def cuts(cov) -> str:
    """What the committed plan leaves out of the issue's protocol, and what of the plan is not
    recorded (markdown bullets), read from the plan's units (``effx.runner.coverage``: one row per
    planned unit, its key's columns and ``status``). The tasks left out of the comparisons are
    said where the comparisons are (``claims``)."""
    cov = _frame(cov)
    if cov.empty:
        return "*No plan to compare with.*"
    jobs = cov[cov.measure.isna()]
    out = []
    tk = jobs[jobs.method == "transkimmer"]
    every = set(jobs.seed)
    grids = []
    for task, g in tk.groupby("task", sort=False):
        at = g.groupby("skim_lambda").seed.agg(lambda s: frozenset(s))
        full = [lam for lam, s in at.items() if s >= every]
        part = [lam for lam, s in at.items() if not s >= every]
        grids.append(f"{task}: {_numbers(full) or 'none'} at every seed"
                     + (f", {_numbers(part)} at seed {_numbers(set().union(*at[part]))} only"
                        if part else ""))
    if grids:
        out.append("Lambdas (ours) run: " + "; ".join(grids) + ". A setting at one seed has no "
                   "interval over seeds; its difference is judged against the dev set's error.")
    if len(tk) and {"epochs", "skim_epochs", "init"} <= set(tk):
        start = ("from it" if set(tk.init) == {"finetuned"} else
                 f"from {' or '.join(sorted(set(tk.init)))} weights")
        out.append(f"Budgets: the baseline {_numbers(set(tk.epochs))} epoch(s); Transkimmer "
                   f"{_numbers(set(tk.skim_epochs))} more {start}, as long as the equal-budget "
                   "baseline's second stage. The paper trains "
                   "Transkimmer 3 epochs from the pre-trained encoder; started there, it collapsed "
                   "on this encoder (findings log, 2026-12-01).")
    if "predictor_lr" in tk and len(tk):
        out.append(f"Predictor learning rate(s) of every run above: {_numbers(set(tk.predictor_lr))}"
                   " (the search above compares rates over a short stage 2; the whole protocol "
                   "at a second rate was not run).")
    topk = jobs[jobs.method == "topk_pruning"]
    if len(topk):
        out.append("Top-k pruning at FLOPs fractions " + ", ".join(
            f"{f:.0%}" for f in sorted(set(topk.flops_target), reverse=True)) + " only.")
    encoders = sorted(set(jobs.encoder))
    out.append(f"Encoder: {', '.join(encoders)} only. The paper's bert-base is not run here: its "
               "weights cannot be installed offline on the build machine, and its 12 layers of "
               "768 need a GPU for a protocol of this size (the README says how to run it).")
    missing = cov[cov.status == "not run"]
    if len(missing):
        kinds = missing.assign(kind=missing.measure.fillna("training")).groupby(
            ["kind", "method"], sort=False).size()
        why = []
        if ("training", "topk_pruning") in kinds.index:
            why.append("a top-k unit prunes its seed's fine-tuned baseline, whose checkpoint is "
                       "not committed: where that baseline had to be trained again, it was cut")
        if "wall_clock" in set(missing.measure):
            why.append("wall-clock units run alone on the machine, after all training, and were "
                       "cut where the time ran out")
        out.append("Planned but not recorded: " + "; ".join(
            f"{n} {kind.replace('_', '-')} unit(s) of {method}" for (kind, method), n in kinds.items())
            + (f" ({'; '.join(why)})" if why else "") + ".")
    failed = cov[~cov.status.isin(["ok", "not run"])]
    if len(failed):
        out.append(f"Failed: {len(failed)} unit(s) (their records say why).")
    return "\n".join(f"* {s}" for s in out)
