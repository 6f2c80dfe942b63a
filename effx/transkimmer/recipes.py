"""Recovering what skimming costs: distillation from the baseline and a last phase on frozen
skim decisions (as learned token pruning ends), each against the plain recipe of the same run.

Input: rows of ``report.summary`` (one per job and seed). A group is the Transkimmer runs alike
but for those two settings: same task, seed, lambda, predictor rate and budget, hence the same
batches, so their differences are paired by training data (not by the dev set's sampling: each
run's accuracy keeps its own standard error).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

RECIPE_GROUP = ["task", "seed", "variant", "skim_lambda", "predictor_lr", "epochs"]


def compare(summ: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Distillation and a frozen-decision last phase against the plain recipe: per group of
    Transkimmer runs alike but for those two (same task, seed, lambda and budget: the same
    batches), one row per run with its points against the equal-budget baseline ('delta'), and
    its change against the plain run in points ('change') and in FLOPs speedup ('flops_change',
    a ratio); per group one sentence, which weighs the best change against its standard error
    from the dev set's sampling (accuracy only; one seed: the training's own noise is not in
    it). ``summ``: rows of ``summary``."""
    tk = summ[summ.method == "transkimmer"] if len(summ) else summ
    rows, said = [], []
    for (task, seed, _, lam, _, _), g in tk.groupby(RECIPE_GROUP, sort=False):
        plain = g[(g.distill == 0) & (g.frozen_epochs == 0)]
        if len(g) < 2 or plain.empty:
            continue
        p = plain.iloc[0]
        g = g.sort_values(["frozen_epochs", "distill"])
        for _, r in g.iterrows():
            rows.append({"task": task, "seed": seed, "skim_lambda": lam, "distill": r.distill,
                         "frozen_epochs": r.frozen_epochs, "value": r.value,
                         "equal_budget": r.equal_budget, "delta": r.delta, "kept": r.kept,
                         "flops_speedup": r.flops_speedup, "wall_b32": r.wall_b32,
                         "change": r.value - p.value,
                         "change_se": change_se(r, p) if r.name != p.name else np.nan,
                         "flops_change": r.flops_speedup / p.flops_speedup})
        others = g[g.index != p.name]
        best = others.loc[(others.value - p.value).idxmax()]
        se = change_se(best, p)
        said.append(
            f"{task}, lambda {lam:g}, seed {seed}: the plain recipe scores {p.value:.1f} "
            f"({p.delta:+.1f} points against the equal-budget baseline) at {p.flops_speedup:.2f}x "
            "FLOPs; " + "; ".join(f"{name(r)} {r.value - p.value:+.1f} points at "
                                 f"{r.flops_speedup:.2f}x" for _, r in others.iterrows())
            + f". The best of them, {name(best)}, changes the score by "
            f"{best.value - p.value:+.1f} points"
            + (f", {'more than' if abs(best.value - p.value) > 2 * se else 'within'} twice the "
               f"standard error of that change from the dev set's sampling ({se:.1f} points, "
               + ("paired by example" if paired(best, p) else "the runs taken as independent")
               + "; one seed, so the training's own noise comes on top)" if np.isfinite(se) else "")
            + f"; it stands {best.delta:+.1f} points from the equal-budget baseline at "
            f"{best.flops_speedup:.2f}x FLOPs.")
    return pd.DataFrame(rows), " ".join(said) or "No run with distillation or frozen decisions " \
        "beside its plain recipe is recorded."


def name(r) -> str:
    """'distillation 0.5', 'frozen 0.5 ep', both joined by '+', or 'plain'."""
    parts = ([f"distillation {r.distill:g}"] if r.distill else []) + \
        ([f"frozen {r.frozen_epochs:g} ep"] if r.frozen_epochs else [])
    return " + ".join(parts) or "plain"


def paired(a, b) -> bool:
    """Whether both runs recorded which dev examples they got right, on the same examples."""
    return all(isinstance(r.get("dev_correct"), str) for r in (a, b)) and \
        len(a["dev_correct"]) == len(b["dev_correct"])


def change_se(a, b) -> float:
    """Standard error (points) of run a's accuracy minus run b's on one dev set: from the
    per-example differences when both recorded them (the dev set's sampling, paired), else
    sqrt(2) x one run's binomial error (independent runs: an upper bound when the runs agree
    more often than chance). NaN for metrics other than accuracy."""
    if a["metric"] != "accuracy":
        return np.nan
    if paired(a, b):
        d = np.array([int(x) - int(y) for x, y in zip(a["dev_correct"], b["dev_correct"])])
        return float(100 * d.std(ddof=1) / np.sqrt(len(d)))
    return float(np.sqrt(2) * np.nanmean([a["dev_se"], b["dev_se"]]))
