"""Recovering what skimming costs: distillation from the baseline and a last phase on frozen
skim decisions (as learned token pruning ends), each against the plain recipe of the same run.

Input: rows of ``report.summary`` (one per job and seed). A run's plain counterpart is the job
alike in every setting but those two (``plain_id``): same task, seed, lambda, budget, hence the
same baseline and the same batches. A change against it has two sources of noise that overlap
(``noise``: the dev set's sampling and the training's own randomness). Their sum in quadrature
counts the examples that flip between runs twice, the larger of the two misses the other's
share: a change is judged against both, as an interval of standard errors, each with its
degrees of freedom and its margin (the standard error times the t quantile of those, 95% for
the family of recipes compared, Bonferroni: ``effx.analysis.margins``).
``compare`` judges each seed's runs; ``over_seeds`` averages a recipe's change over the seeds.
"""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from effx.analysis.margins import combined, margins, quantile, verdict
from effx.transkimmer.noise import Noise, dev_se, families, mean_dev_se, paired, training_sd

NO_RUN = "No run with distillation or frozen decisions beside its plain recipe is recorded."


def compare(summ: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """One row per Transkimmer run that has a plain counterpart (the plain run first): its score,
    its change against its reference ('delta': the equal-budget baseline of its seed where
    recorded), and against the plain run in points ('change', with 'change_se' from both noise
    sources, accuracy only: 'change_se_low' the larger source alone, 'change_se' both in
    quadrature) and in FLOPs speedup ('flops_change', a ratio); then one sentence per plain run
    (by task, lambda and seed), what the judgement rests on after the task's last sentence (or
    after each run of sentences that share it). 'margin_low' and 'margin'
    are 'change_se_low' and 'change_se' times their t quantiles (``margins``, 95% for the family
    of recipes compared with that plain run): a change counts beyond both, is within the noise
    inside both, and at its edge between. Where the training's part is the direct estimate, a
    seed's own changes are part of the spread that judges them, which makes these margins err a
    little to the safe side."""
    tk = summ[summ.method == "transkimmer"] if len(summ) else summ
    if tk.empty:
        return pd.DataFrame(), NO_RUN
    noise = {task: training_sd(summ, task) for task in tk.task.unique()}
    rows, said = [], []
    for p, others in sorted(families(tk), key=lambda f: (f[0].task, f[0].skim_lambda,
                                                         f[0].seed, f[0].setting)):
        k = len(others)
        family = [_row(p, p, noise[p.task], k)] + [_row(r, p, noise[p.task], k)
                                                   for _, r in others.iterrows()]
        rows += family
        all_paired = all(paired(r, p) for _, r in others.iterrows())
        basis = (f"No standard error of a change in {p.metric} is computed."
                 if p.metric != "accuracy" else _basis(k, all_paired, noise[p.task]))
        said.append(((p.task, basis), _sentence(p, family[1:])))
    text = [" ".join([s for _, s in run] + [key[1]])
            for key, run in itertools.groupby(said, key=lambda ks: ks[0])]
    return pd.DataFrame(rows), " ".join(text) or NO_RUN


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


def _sentence(p: pd.Series, others: list[dict]) -> str:
    equal = pd.notna(p.equal_budget)
    against = "the equal-budget baseline" if equal else "the baseline"
    head = (f"{p.task}, lambda {p.skim_lambda:g}, seed {p.seed}: the plain recipe scores "
            f"{p.value:.1f} ({p.delta:+.1f} points against {against}) at {p.flops_speedup:.2f}x "
            "FLOPs.")
    parts = [f"{r['recipe']}: {r['change']:+.1f} points{_judged(r)}, at "
             f"{r['flops_speedup']:.2f}x FLOPs ({r['delta']:+.1f} against "
             f"{'equal budget' if equal else 'the baseline'})" for r in others]
    return f"{head} {'; '.join(parts)}."


def _judged(r) -> str:
    """' ± se (margin m) to se (margin m), beyond / within / at the edge of the noise' for a row
    with a change, its standard errors and their margins ('' without an error)."""
    if not (np.isfinite(r["change_se"]) and np.isfinite(r["change"])):
        return ""
    low = f"{r['change_se_low']:.1f} (margin {r['margin_low']:.1f})"
    high = f"{r['change_se']:.1f} (margin {r['margin']:.1f})"
    span = low if low == high else f"{low} to {high}"
    return f" ± {span}, {verdict(r['change'], r['margin_low'], r['margin'])} the noise"


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
    for p, others in families(tk):
        by.setdefault((p.group, ""), []).append((p, p))
        for _, r in others.iterrows():
            by.setdefault((p.group, r.recipe), []).append((p, r))
    recipes_of = pd.Series([g for g, recipe in by if recipe]).value_counts()   # k per setting
    noise = {task: training_sd(summ, task) for task in tk.task.unique()}
    rows = []
    for (group, recipe), pairs in by.items():
        pairs.sort(key=lambda pr: int(pr[0].seed))
        p0, n, plain = pairs[0][0], len(pairs), recipe == ""
        changes = np.array([float(r.value - p.value) for p, r in pairs])
        sd, dof = noise[p0.task].sd, noise[p0.task].dof
        low = high = m_low = m_high = np.nan
        if not plain:
            low, high, m_low, m_high = margins(
                combined(*mean_dev_se(pairs), sd / np.sqrt(n), dof), recipes_of[group])
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
        basis = _margins_said(len(others), noise) + (
            f" The training's part is {noise.sd:.2f} points ({noise.source}) over the root of "
            "the seeds." if np.isfinite(noise.sd) else "")
    return head + "; ".join(parts) + ". " + basis


def _margins_said(k: int, noise: Noise) -> str:
    family = f" (Bonferroni over {k} recipes)" if k > 1 else ""
    if not np.isfinite(noise.sd):
        return (f"Margins: {quantile(k):.2f} standard errors of the dev set's sampling alone, "
                f"the normal quantile, 95% for the family{family}.")
    return ("Margins: a standard error times the t quantile of its degrees of freedom, 95% for "
            f"the family{family}: {quantile(k, noise.dof):.2f} for the training's estimate "
            f"alone, falling toward {quantile(k):.2f} as the dev set's sampling takes a larger "
            "share (Welch-Satterthwaite); a change beyond both margins counts, one inside both "
            "is within the noise.")


def _basis(k: int, all_paired: bool, noise: Noise) -> str:
    dev = "paired by example" if all_paired else "runs taken as independent where not recorded"
    if not np.isfinite(noise.sd):
        return (f"{_margins_said(k, noise)} The dev set's sampling ({dev}) alone, since no "
                "setting of this task trained at several seeds with its equal-budget baseline, "
                "and no recipe at several seeds, shows the training's own noise: too small.")
    return (f"{_margins_said(k, noise)} Each standard error lies between the larger of the dev "
            f"set's sampling ({dev}) and the training's own noise ({noise.sd:.2f} points: "
            f"{noise.source}) and their sum in quadrature: the two overlap, as examples that "
            "flip between runs are in both.")


