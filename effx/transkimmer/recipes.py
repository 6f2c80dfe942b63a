"""Recovering what skimming costs: distillation from the baseline and a last phase on frozen
skim decisions (as learned token pruning ends), each against the plain recipe of the same run.

Input: rows of ``report.summary`` (one per job and seed). A run's plain counterpart is the job
alike in every setting but those two (``plain_id``): same task, seed, lambda, budget, hence the
same baseline and the same batches. A change against it has two sources of noise, which overlap:
- the dev set's sampling: from the examples each run got right (``dev_correct``), paired by
  example when both recorded them, else the two runs taken as independent; examples that flip
  between two runs of different training are part of it;
- the training's own randomness, which one seed cannot show: the pooled spread over seeds of
  the recipes' own change against their plain run, where recipes ran at several seeds (the
  direct estimate), and of the change of every setting trained at several seeds against the
  equal-budget baseline of the same seed (a proxy: that change, like a recipe's, compares two
  stage-2 runs that share a stage 1, but one of them does not skim, and other lambdas' noise
  stands for the one compared); both are measured on the same dev set, so they hold the
  flipping examples too. The larger of the two is used: a conservative choice between two
  imprecise estimates (few degrees of freedom each), the proxy possibly the smaller by its
  design (one side of its change does not skim). Both pool the task's settings: one lambda's
  spread stands for another's.
Their sum in quadrature counts the flipping examples twice, the larger of the two misses the
other's share: a change is judged against both, as an interval of standard errors. Each standard
error carries its degrees of freedom: the training's part those of its pooled spread, counted
with shared runs taken into account (the recipes of a seed share its plain run, the settings of
a seed their equal-budget baseline), the dev set's part as many as examples (taken as
infinite), a sum in quadrature by Welch-Satterthwaite; a change's margin is its standard error
times the t quantile of those degrees of freedom (95% for the family of recipes compared,
Bonferroni): ``effx.analysis.margins``.
``compare`` judges each seed's runs; ``over_seeds`` averages a recipe's change over the seeds.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from effx.analysis.margins import Spread, combined, margins, pooled_spread, quantile

NO_RUN = "No run with distillation or frozen decisions beside its plain recipe is recorded."


class Noise(NamedTuple):
    """The training's noise of a change between two stage-2 runs of one seed."""
    sd: float          # points (NaN: unknown)
    dof: float         # its effective degrees of freedom
    source: str        # what it rests on, in words


def compare(summ: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """One row per Transkimmer run that has a plain counterpart (the plain run first): its score,
    its change against its reference ('delta': the equal-budget baseline of its seed where
    recorded), and against the plain run in points ('change', with 'change_se' from both noise
    sources, accuracy only: 'change_se_low' the larger source alone, 'change_se' both in
    quadrature) and in FLOPs speedup ('flops_change', a ratio); then one sentence per plain run.
    'margin_low' and 'margin' are the two standard errors times their t quantiles (``margins``),
    in order: a change counts when it exceeds the larger, and is within the noise when it stays
    within the smaller (95% for the family of recipes compared with that plain run)."""
    tk = summ[summ.method == "transkimmer"] if len(summ) else summ
    if tk.empty:
        return pd.DataFrame(), NO_RUN
    noise = {task: training_sd(summ, task) for task in tk.task.unique()}
    rows, said = [], []
    for p, others in _families(tk):
        k = len(others)
        family = [_row(p, p, noise[p.task], k)] + [_row(r, p, noise[p.task], k)
                                                   for _, r in others.iterrows()]
        rows += family
        all_paired = all(paired(r, p) for _, r in others.iterrows())
        said.append(_sentence(p, family[1:], noise[p.task], all_paired))
    return pd.DataFrame(rows), " ".join(said) or NO_RUN


def _row(r: pd.Series, p: pd.Series, noise: Noise, k: int) -> dict:
    """Run r against its plain run p (p itself: no change), one of k recipes compared with p."""
    first = r.id == p.id
    if first:
        low = high = m_low = m_high = np.nan
    else:
        dev = dev_se(r, p)
        low, high, m_low, m_high = margins(combined(dev, dev, noise.sd, noise.dof), k)
    return {"task": r.task, "seed": r.seed, "skim_lambda": r.skim_lambda,
            "recipe": r.recipe or "plain", "value": r.value, "reference": r.reference,
            "delta": r.delta, "kept": r.kept, "flops_speedup": r.flops_speedup,
            "wall_b32": r.wall_b32, "change": np.nan if first else r.value - p.value,
            "change_se_low": low, "change_se": high, "margin_low": m_low, "margin": m_high,
            "flops_change": np.nan if first else r.flops_speedup / p.flops_speedup}


def _sentence(p: pd.Series, others: list[dict], noise: Noise, all_paired: bool) -> str:
    equal = pd.notna(p.equal_budget)
    against = "the equal-budget baseline" if equal else "the baseline"
    head = (f"{p.task}, lambda {p.skim_lambda:g}, seed {p.seed}: the plain recipe scores "
            f"{p.value:.1f} ({p.delta:+.1f} points against {against}) at {p.flops_speedup:.2f}x "
            "FLOPs.")
    parts = [f"{r['recipe']}: {r['change']:+.1f} points{_judged(r)}, at "
             f"{r['flops_speedup']:.2f}x FLOPs ({r['delta']:+.1f} against "
             f"{'equal budget' if equal else 'the baseline'})" for r in others]
    if p.metric != "accuracy":
        basis = f"No standard error of a change in {p.metric} is computed."
    else:
        basis = _basis(len(others), all_paired, noise)
    return " ".join([head, "; ".join(parts) + ".", basis])


def _families(tk: pd.DataFrame):
    """(plain run, the other recipes' runs in recipe order) for every plain Transkimmer run that
    has recipes beside it."""
    for plain_id, g in tk.groupby("plain_id", sort=False):
        plain, others = g[g.id == plain_id], g[g.id != plain_id]
        if not plain.empty and not others.empty:
            yield plain.iloc[0], others.sort_values("recipe")


def _judged(r) -> str:
    """' ± low to high (margin a to b), beyond / within / at the edge of the noise' for a row
    with a change, its standard errors and margins ('' without an error)."""
    if not np.isfinite(r["change_se"]):
        return ""

    def span(a, b):
        return f"{a:.1f}" + (f" to {b:.1f}" if b - a >= 0.05 else "")
    change = abs(r["change"])
    return (f" ± {span(r['change_se_low'], r['change_se'])} (margin "
            f"{span(r['margin_low'], r['margin'])}), "
            + ("beyond" if change > r["margin"] else "within" if change <= r["margin_low"]
               else "at the edge of") + " the noise")


def over_seeds(summ: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Each recipe's change against the plain run of the same seed, averaged over the seeds
    where both ran: one row per setting (every setting but the seed) and recipe, the plain
    recipe first with its mean score, then one sentence per setting with a recipe at two seeds
    or more ('' when none has).

    Standard errors of the mean change, from the same two sources as one seed's: the dev set's
    sampling of the per-example change averaged over seeds (the seeds share the dev set, so
    their sampling errors are not independent; where a pair did not record its examples, the
    truth lies between the seeds' errors taken as independent and their average, the bound
    under any correlation), and the training's own noise over the square root of the number of
    seeds (independent runs); as for one seed, the larger alone ('change_se_low') and both in
    quadrature ('change_se'), with their margins as in ``compare`` (the training's part keeping
    the degrees of freedom of its estimate). 'plain_value' is the plain runs' mean over the
    recipe's seeds; 'seed_sd' the spread of the change over seeds on the one dev set: pooled
    over the recipes, the direct estimate of the training's part (``training_sd``).
    """
    tk = summ[summ.method == "transkimmer"] if len(summ) else summ
    if tk.empty:
        return pd.DataFrame(), ""
    by: dict[tuple, list] = {}
    for p, others in _families(tk):
        by.setdefault((p.group, ""), []).append((p, p))
        for _, r in others.iterrows():
            by.setdefault((p.group, r.recipe), []).append((p, r))
    noise = {task: training_sd(summ, task) for task in tk.task.unique()}
    rows = []
    for (group, recipe), pairs in by.items():
        pairs.sort(key=lambda pr: int(pr[0].seed))
        p0, n, plain = pairs[0][0], len(pairs), recipe == ""
        changes = np.array([float(r.value - p.value) for p, r in pairs])
        k = sum(1 for g, rec in by if g == group and rec)           # recipes of this setting
        sd, dof = noise[p0.task].sd, noise[p0.task].dof
        low = high = m_low = m_high = np.nan
        if not plain:
            low, high, m_low, m_high = margins(
                combined(*_mean_dev_se(pairs), sd / np.sqrt(n), dof), k)
        equal = [pd.notna(p.equal_budget) for p, _ in pairs]
        rows.append({"group": group, "task": p0.task, "skim_lambda": p0.skim_lambda,
                     "recipe": recipe or "plain", "metric": p0.metric, "seeds": n,
                     "seed_list": ", ".join(str(int(p.seed)) for p, _ in pairs),
                     "value": float(np.mean([r.value for _, r in pairs])),
                     "plain_value": float(np.mean([p.value for p, _ in pairs])),
                     "against": "equal budget" if all(equal) else "the baseline" if not any(equal)
                     else "",
                     "delta": float(np.mean([r.delta for _, r in pairs])) if all(equal) or
                     not any(equal) else np.nan,
                     "flops_speedup": float(np.mean([r.flops_speedup for _, r in pairs])),
                     "change": np.nan if plain else float(changes.mean()),
                     "seed_sd": float(changes.std(ddof=1)) if n > 1 and not plain else np.nan,
                     "change_se_low": low, "change_se": high, "margin_low": m_low,
                     "margin": m_high,
                     "flops_change": np.nan if plain else float(np.mean(
                         [r.flops_speedup / p.flops_speedup for p, r in pairs]))})
    table = pd.DataFrame(rows)
    said = [_averaged_sentence(g, noise[g.task.iloc[0]])
            for _, g in table.groupby("group", sort=False)
            if (g.seeds[g.recipe != "plain"] >= 2).any()]
    return table.drop(columns="group"), " ".join(said)


def _averaged_sentence(g: pd.DataFrame, noise: Noise) -> str:
    plain, others = g[g.recipe == "plain"].iloc[0], g[g.recipe != "plain"]

    def against(r):
        return f" ({r.delta:+.1f} against {r.against})" if np.isfinite(r.delta) else ""
    parts = []
    for _, r in others.iterrows():
        seeds = (f"seeds {r.seed_list}, spread {r.seed_sd:.1f}" if r.seeds > 1
                 else f"seed {r.seed_list} alone")
        parts.append(f"{r.recipe}: {r.change:+.1f} points{_judged(r)} ({seeds}), at "
                     f"{r.flops_speedup:.2f}x FLOPs{against(r)}")
    head = (f"{plain.task}, lambda {plain.skim_lambda:g}, averaged over seeds {plain.seed_list}: "
            f"the plain recipe scores {plain.value:.1f}{against(plain)} at "
            f"{plain.flops_speedup:.2f}x FLOPs; against the plain run of the same seed, ")
    if plain.metric != "accuracy":
        basis = f"No standard error of a change in {plain.metric} is computed."
    else:
        basis = (_counts_beyond(len(others), noise) + "; the training's part is " + (
                     f"{noise.sd:.2f} points ({noise.source}) over the root of the seeds"
                     if np.isfinite(noise.sd) else "unknown (its runs lack a value)") + ".")
    return head + "; ".join(parts) + ". " + basis


def _mean_dev_se(pairs: list) -> tuple[float, float]:
    """(low, high) standard error (points) from the dev set's sampling of the change averaged
    over seeds: from the per-example changes averaged over seeds when every pair recorded its
    examples (low = high), else between the seeds' errors taken as independent and their
    average (the bound under any correlation between them). NaN for other metrics."""
    if pairs[0][0]["metric"] != "accuracy":
        return np.nan, np.nan
    if all(paired(r, p) for p, r in pairs):
        se = _mean_se(np.mean([_per_example(r, p) for p, r in pairs], axis=0))
        return se, se
    each = np.array([dev_se(r, p) for p, r in pairs])
    return float(np.sqrt((each ** 2).sum()) / len(each)), float(each.mean())


def _counts_beyond(k: int, noise: Noise) -> str:
    family = f", Bonferroni over {k} recipes" if k > 1 else ""
    if not np.isfinite(noise.sd):
        return (f"A change counts beyond {quantile(k):.2f} standard errors (the normal "
                f"quantile{family})")
    return ("A change counts beyond its margin, a standard error times the t quantile of its "
            f"degrees of freedom (95%{family}: {quantile(k):.2f} for many, "
            f"{quantile(k, noise.dof):.2f} for the training's part alone, {noise.dof:.1f} "
            "effective; the dev set's part taken as exact, a sum by Welch-Satterthwaite)")


def _basis(k: int, all_paired: bool, noise: Noise) -> str:
    dev = "paired by example" if all_paired else "runs taken as independent where not recorded"
    if not np.isfinite(noise.sd):
        return (f"{_counts_beyond(k, noise)}: those of the dev set's "
                f"sampling ({dev}) alone, since no setting of this task trained at several seeds "
                "with its equal-budget baseline, and no recipe at several seeds, shows the "
                "training's own noise: too small.")
    return (f"{_counts_beyond(k, noise)}; the standard errors lie between the "
            f"larger and the sum in quadrature of the dev set's sampling ({dev}) and the "
            f"training's own noise ({noise.sd:.2f} points: {noise.source}); the two overlap, as "
            "examples that flip between runs are in both.")


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
    for p, others in _families(tk):
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
        return _mean_se(_per_example(a, b))
    return float(np.hypot(a["dev_se"], b["dev_se"]))


def _per_example(a: pd.Series, b: pd.Series) -> np.ndarray:
    """Run a's right (1) or wrong (0) minus run b's, per dev example."""
    return np.array(list(a["dev_correct"]), dtype=int) - np.array(list(b["dev_correct"]), dtype=int)


def _mean_se(d: np.ndarray) -> float:
    """Standard error, in points, of the mean of per-example changes d."""
    return float(100 * d.std(ddof=1) / np.sqrt(len(d)))
