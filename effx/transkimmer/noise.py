"""The noise of a change between two Transkimmer runs of one seed (a recipe against its plain
run: ``recipes``), from two sources that overlap:

- the dev set's sampling: from the examples each run got right (``dev_correct``), paired by
  example when both recorded them, else the two runs taken as independent (``dev_se``; averaged
  over seeds, which share the dev set: ``mean_dev_se``); examples that flip between two runs of
  different training are part of it;
- the training's own randomness, which one seed cannot show (``training_sd``): the pooled spread
  over seeds of the recipes' own change against their plain run, where recipes ran at several
  seeds (``recipe_noise``, the direct estimate), and of the change of every setting trained at
  several seeds against the equal-budget baseline of the same seed (``training_noise``, a
  proxy: that change, like a recipe's, compares two stage-2 runs that share a stage 1, but one
  of them does not skim, and other lambdas' noise stands for the one compared); both are
  measured on the same dev set, so they hold the flipping examples too. The larger of the two
  is used: a conservative choice between two imprecise estimates, the proxy possibly the
  smaller by its design. Both pool the task's settings, and both count their degrees of
  freedom with shared runs taken into account (a seed's recipes share its plain run, a seed's
  settings their equal-budget baseline: ``effx.analysis.margins.effective_dof``).

Input: rows of ``report.summary`` (one per job and seed); a run's plain counterpart is the job
alike in every setting but distillation and the frozen phase (``plain_id``).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from effx.analysis.margins import Spread, pooled_spread


class Noise(NamedTuple):
    """The training's noise of a change between two stage-2 runs of one seed."""
    sd: float          # points (NaN: unknown)
    dof: float         # its effective degrees of freedom
    source: str        # what it rests on, in words


def families(tk: pd.DataFrame):
    """(plain run, the other recipes' runs in recipe order) for every plain Transkimmer run that
    has recipes beside it."""
    for plain_id, g in tk.groupby("plain_id", sort=False):
        plain, others = g[g.id == plain_id], g[g.id != plain_id]
        if not plain.empty and not others.empty:
            yield plain.iloc[0], others.sort_values("recipe")


def training_sd(summ: pd.DataFrame, task: str) -> Noise:
    """The training's noise of a change between two stage-2 runs of one seed (points): the
    larger of ``recipe_noise`` and ``training_noise`` where known, with its effective degrees
    of freedom; NaN when neither is."""
    direct, proxy = recipe_noise(summ, task), training_noise(summ, task)
    said = {"direct": f"the pooled spread over seeds of {direct.groups} recipes' change against "
                      f"their plain run, {direct.sd:.2f} with {direct.dof} nominal degrees of "
                      f"freedom, {direct.effective:.1f} effective (a seed's recipes share its "
                      "plain run)",
            "proxy": f"the pooled spread over seeds of {proxy.groups} settings' change against "
                     f"their equal-budget baseline, {proxy.sd:.2f} with {proxy.dof} nominal "
                     f"degrees of freedom, {proxy.effective:.1f} effective (a seed's settings "
                     "share its equal-budget baseline)"}
    known = {k: v for k, v in (("direct", direct), ("proxy", proxy)) if np.isfinite(v.sd)}
    if not known:
        return Noise(np.nan, np.nan, "")
    if len(known) == 1:
        (k, v), = known.items()
        return Noise(v.sd, v.effective, said[k])
    larger = direct if direct.sd >= proxy.sd else proxy
    return Noise(larger.sd, larger.effective,
                 f"the larger of {said['direct']}, and {said['proxy']}")


def recipe_noise(summ: pd.DataFrame, task: str) -> Spread:
    """The pooled spread over seeds of a recipe's change against the plain run of its seed, over
    the task's recipes run at two seeds or more (all the task's lambdas pooled). The recipes of
    one seed share its plain run, so their changes are not independent: that leaves the
    estimate unbiased but less precise than its nominal degrees of freedom say (``effective``)."""
    tk = summ[(summ.method == "transkimmer") & (summ.task == task)] if len(summ) else summ
    by: dict[tuple, list] = {}
    for p, others in families(tk):
        for _, r in others.iterrows():
            by.setdefault((p.group, r.recipe), []).append((float(r.value - p.value), p.id))
    return pooled_spread(list(by.values()))


def training_noise(summ: pd.DataFrame, task: str) -> Spread:
    """The pooled spread over seeds of Transkimmer's change against its equal-budget baseline,
    over the task's settings with at least two seeds and an equal-budget baseline (settings of
    one seed sharing that baseline: ``effective``)."""
    tk = summ[(summ.method == "transkimmer") & (summ.task == task) & summ.equal_budget.notna()]
    return pooled_spread([list(zip(g.delta, g.equal_id)) for _, g in tk.groupby("group")])


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
        return mean_se(per_example(a, b))
    return float(np.hypot(a["dev_se"], b["dev_se"]))


def per_example(a: pd.Series, b: pd.Series) -> np.ndarray:
    """Run a's right (1) or wrong (0) minus run b's, per dev example."""
    return np.array(list(a["dev_correct"]), dtype=int) - np.array(list(b["dev_correct"]), dtype=int)


def mean_se(d: np.ndarray) -> float:
    """Standard error, in points, of the mean of per-example changes d."""
    return float(100 * d.std(ddof=1) / np.sqrt(len(d)))


def mean_dev_se(pairs: list) -> tuple[float, float]:
    """(low, high) standard error (points) from the dev set's sampling of the change averaged
    over seeds: from the per-example changes averaged over seeds when every pair recorded its
    examples (low = high), else between the seeds' errors taken as independent and their
    average (the bound under any correlation between them). NaN for other metrics."""
    if pairs[0][0]["metric"] != "accuracy":
        return np.nan, np.nan
    if all(paired(r, p) for p, r in pairs):
        se = mean_se(np.mean([per_example(r, p) for p, r in pairs], axis=0))
        return se, se
    each = np.array([dev_se(r, p) for p, r in pairs])
    return float(np.sqrt((each ** 2).sum()) / len(each)), float(each.mean())
