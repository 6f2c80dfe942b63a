"""Recovering what skimming costs: distillation from the baseline and a last phase on frozen
skim decisions (as learned token pruning ends), each against the plain recipe of the same run.

Input: rows of ``report.summary`` (one per job and seed). A run's plain counterpart is the job
alike in every setting but those two (``plain_id``): same task, seed, lambda, budget, hence the
same baseline and the same batches. A change against it has two sources of noise, which overlap:
- the dev set's sampling: from the examples each run got right (``dev_correct``), paired by
  example when both recorded them, else the two runs taken as independent; examples that flip
  between two runs of different training are part of it;
- the training's own randomness, which one seed cannot show: taken from the settings trained at
  several seeds, as the pooled spread over seeds of their change against the equal-budget
  baseline of the same seed (that change, like a recipe's, compares two stage-2 runs that share
  a stage 1; measured on the same dev set, it holds the flipping examples too, and it assumes
  other lambdas' noise for the one compared).
Their sum in quadrature counts the flipping examples twice, the larger of the two misses the
other's share: a change is judged against both, as an interval of standard errors.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

NO_RUN = "No run with distillation or frozen decisions beside its plain recipe is recorded."


def compare(summ: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """One row per Transkimmer run that has a plain counterpart (the plain run first): its score,
    its change against its reference ('delta': the equal-budget baseline of its seed where
    recorded), and against the plain run in points ('change', with 'change_se' from both noise
    sources, accuracy only: 'change_se_low' the larger source alone, 'change_se' both in
    quadrature) and in FLOPs speedup ('flops_change', a ratio); then one sentence per plain run.
    A change counts when it exceeds z times even the larger standard error, and is within the
    noise when it stays within z times the smaller; z is the normal quantile Bonferroni-corrected
    for the recipes compared with that plain run (95% for the family, approximately: the
    training's part rests on few degrees of freedom)."""
    tk = summ[summ.method == "transkimmer"] if len(summ) else summ
    if tk.empty:
        return pd.DataFrame(), NO_RUN
    rows, said = [], []
    for plain_id, g in tk.groupby("plain_id", sort=False):
        plain, others = g[g.id == plain_id], g[g.id != plain_id]
        if plain.empty or others.empty:
            continue
        p = plain.iloc[0]
        noise = training_noise(summ, p.task)
        z = stats.norm.ppf(1 - 0.025 / len(others))
        others = others.sort_values("recipe")
        for _, r in pd.concat([plain, others]).iterrows():
            first = r.id == plain_id
            low, high = (np.nan, np.nan) if first else change_se(r, p, noise[0])
            rows.append({"task": r.task, "seed": r.seed, "skim_lambda": r.skim_lambda,
                         "recipe": r.recipe or "plain", "value": r.value,
                         "reference": r.reference, "delta": r.delta, "kept": r.kept,
                         "flops_speedup": r.flops_speedup, "wall_b32": r.wall_b32,
                         "change": np.nan if first else r.value - p.value,
                         "change_se_low": low, "change_se": high,
                         "flops_change": np.nan if first else r.flops_speedup / p.flops_speedup})
        said.append(_sentence(p, others, z, noise))
    return pd.DataFrame(rows), " ".join(said) or NO_RUN


def _sentence(p: pd.Series, others: pd.DataFrame, z: float, noise: tuple) -> str:
    equal = pd.notna(p.equal_budget)
    against = "the equal-budget baseline" if equal else "the baseline"
    head = (f"{p.task}, lambda {p.skim_lambda:g}, seed {p.seed}: the plain recipe scores "
            f"{p.value:.1f} ({p.delta:+.1f} points against {against}) at {p.flops_speedup:.2f}x "
            "FLOPs.")
    parts = []
    for _, r in others.iterrows():
        change, (low, high) = r.value - p.value, change_se(r, p, noise[0])
        judged = "" if not np.isfinite(high) else (
            f" ± {low:.1f}" + (f" to {high:.1f}" if high - low >= 0.05 else "") + ", "
            + ("beyond" if abs(change) > z * high else "within" if abs(change) <= z * low
               else "at the edge of") + " the noise")
        parts.append(f"{r.recipe}: {change:+.1f} points{judged}, at {r.flops_speedup:.2f}x FLOPs "
                     f"({r.delta:+.1f} against {'equal budget' if equal else 'the baseline'})")
    if p.metric != "accuracy":
        basis = f"No standard error of a change in {p.metric} is computed."
    else:
        basis = _basis(z, len(others), all(paired(r, p) for _, r in others.iterrows()), noise)
    return " ".join([head, "; ".join(parts) + ".", basis])


def _basis(z: float, k: int, all_paired: bool, noise: tuple) -> str:
    sd, dof, n = noise
    family = f" (Bonferroni over {k} recipes)" if k > 1 else ""
    dev = "paired by example" if all_paired else "runs taken as independent where not recorded"
    if not np.isfinite(sd):
        return (f"A change counts beyond {z:.2f} standard errors{family}: those of the dev set's "
                f"sampling ({dev}) alone, since no setting of this task trained at several seeds "
                "with its equal-budget baseline shows the training's own noise: too small.")
    return (f"A change counts beyond {z:.2f} standard errors{family}, which lie between the "
            f"larger and the sum in quadrature of the dev set's sampling ({dev}) and the "
            f"training's own noise ({sd:.2f} points: the pooled spread over seeds of {n} "
            f"settings' change against their equal-budget baseline, {dof} nominal degrees of "
            "freedom); the two overlap, as examples that flip between runs are in both.")


def training_noise(summ: pd.DataFrame, task: str) -> tuple[float, int, int]:
    """(pooled standard deviation over seeds of Transkimmer's change against its equal-budget
    baseline, degrees of freedom, settings pooled), over the task's settings with at least two
    seeds and an equal-budget baseline; (NaN, 0, 0) when there are none."""
    tk = summ[(summ.method == "transkimmer") & (summ.task == task) & summ.equal_budget.notna()]
    if tk.empty:
        return np.nan, 0, 0
    groups = [g.delta.to_numpy() for _, g in tk.groupby("group") if len(g) >= 2]
    dof = sum(len(d) - 1 for d in groups)
    if not dof:
        return np.nan, 0, 0
    pooled = sum(((d - d.mean()) ** 2).sum() for d in groups) / dof
    return float(np.sqrt(pooled)), dof, len(groups)


def paired(a: pd.Series, b: pd.Series) -> bool:
    """Whether both runs recorded which dev examples they got right, on as many examples."""
    return all(isinstance(r.get("dev_correct"), str) for r in (a, b)) and \
        len(a["dev_correct"]) == len(b["dev_correct"])


def dev_se(a: pd.Series, b: pd.Series) -> float:
    """Standard error (points) of run a's accuracy minus run b's from the dev set's sampling:
    from the per-example differences when both recorded them, else of two independent runs'
    binomial errors (an upper bound when the runs agree more often than chance). NaN for
    metrics other than accuracy."""
    if a["metric"] != "accuracy":
        return np.nan
    if paired(a, b):
        d = np.array([int(x) - int(y) for x, y in zip(a["dev_correct"], b["dev_correct"])])
        return float(100 * d.std(ddof=1) / np.sqrt(len(d)))
    return float(np.hypot(a["dev_se"], b["dev_se"]))


def change_se(a: pd.Series, b: pd.Series, training_sd: float = np.nan) -> tuple[float, float]:
    """(low, high) standard error (points) of a - b from the dev set's sampling and, when known,
    the training's own noise (``training_sd``, the spread of a change between two stage-2 runs):
    the larger of the two, and both in quadrature (the two overlap: the truth lies between)."""
    dev = dev_se(a, b)
    if not np.isfinite(training_sd):
        return dev, dev
    return float(max(dev, training_sd)), float(np.hypot(dev, training_sd))
