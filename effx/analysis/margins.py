"""Margins of a change judged on few degrees of freedom.

A change between two runs (a recipe against its plain run, a setting against its baseline) has
a standard error from two sources: a sampling error known almost exactly (the dev set's, from
hundreds of examples) and the training's own noise, estimated from the spread of changes over a
few seeds. Three things keep the margin honest when the second rests on few degrees of freedom:

* ``pooled_spread`` pools the spread over groups (settings, recipes) and counts its degrees of
  freedom with shared reference runs taken into account (``effective_dof``): changes against
  one run (a seed's plain run, behind every recipe's change at that seed) are not independent;
* ``combined`` gives the two standard errors of overlapping sources (the larger alone, both in
  quadrature) with their degrees of freedom (the latter by Welch-Satterthwaite);
* ``margins`` multiplies each by the t quantile of its degrees of freedom (``quantile``, 95% for
  a family of k comparisons, Bonferroni).

The tests check the coverage of these margins by simulation.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats


class Spread(NamedTuple):
    """A pooled spread over seeds of changes against a reference run."""
    sd: float          # the change's unit (NaN: no group of two or more)
    dof: int           # nominal degrees of freedom
    groups: int        # groups (settings or recipes) of two or more
    effective: float   # degrees of freedom, shared reference runs accounted (``effective_dof``)


def quantile(k: int, dof: float = np.inf) -> float:
    """The two-sided 95% t quantile of dof degrees of freedom (infinite: the normal one),
    Bonferroni-corrected for a family of k comparisons."""
    return float(stats.t.ppf(1 - 0.025 / k, dof))


def pooled_spread(groups: list) -> Spread:
    """The pooled spread within groups of (change, name of its reference run) pairs, NaN changes
    left out; groups of fewer than two do not count."""
    groups = [[(float(c), ref) for c, ref in g if np.isfinite(c)] for g in groups]
    groups = [g for g in groups if len(g) >= 2]
    dof = sum(len(g) - 1 for g in groups)
    if not dof:
        return Spread(np.nan, 0, 0, np.nan)
    values = [np.array([c for c, _ in g]) for g in groups]
    pooled = sum(((d - d.mean()) ** 2).sum() for d in values) / dof
    return Spread(float(np.sqrt(pooled)), dof, len(groups),
                  effective_dof([[ref for _, ref in g] for g in groups]))


def effective_dof(groups: list[list]) -> float:
    """Degrees of freedom of a pooled spread of changes, each its own run minus a reference run
    named in ``groups`` (one list of reference names per group; a name shared across groups is
    one run, as a seed's plain run behind each recipe's change). With every run equally noisy
    and normal, the pooled sum of squares is a weighted sum of chi-squares; Satterthwaite's
    match is tr(S)^2 / tr(S^2), S the covariance of the deviations from the group means.
    Independent references give the nominal count; k recipes sharing the plain run at each of
    n seeds give (n - 1) 4k / (k + 3), below the nominal (n - 1) k for k > 1."""
    refs = sorted({ref for g in groups for ref in g}, key=str)
    n_changes = sum(len(g) for g in groups)
    column = {ref: n_changes + i for i, ref in enumerate(refs)}
    rows, own = [], 0
    for g in groups:
        change = np.zeros((len(g), n_changes + len(refs)))
        for i, ref in enumerate(g):
            change[i, own + i], change[i, column[ref]] = 1.0, -1.0
        own += len(g)
        rows.append(change - change.mean(axis=0))
    deviations = np.vstack(rows)
    cov = deviations @ deviations.T
    return float(np.trace(cov) ** 2 / (cov ** 2).sum())


def combined(sampling_low: float, sampling_high: float, train_sd: float,
             train_dof: float) -> tuple[float, float, float, float]:
    """(low, high, low's and high's degrees of freedom): standard errors from a sampling error
    known almost exactly (between sampling_low and sampling_high, its degrees of freedom taken
    as infinite) and the training's (``train_sd`` with ``train_dof``, NaN when unknown): the
    larger of the two, and both in quadrature (for sources that overlap the truth lies
    between), the latter's degrees of freedom by Welch-Satterthwaite."""
    if not np.isfinite(train_sd):
        return sampling_low, sampling_high, np.inf, np.inf
    low_dof = train_dof if train_sd >= sampling_low else np.inf
    high_dof = ((sampling_high ** 2 + train_sd ** 2) ** 2 * train_dof / train_sd ** 4
                if train_sd > 0 else np.inf)
    return (float(max(sampling_low, train_sd)), float(np.hypot(sampling_high, train_sd)),
            low_dof, high_dof)


def margins(ses: tuple, k: int) -> tuple[float, float, float, float]:
    """(low, high) standard errors with their degrees of freedom (as ``combined`` returns them)
    -> (low, high, and the two margins: each standard error times its quantile for a family of
    k, the smaller first). With few degrees of freedom the smaller standard error can carry the
    larger margin."""
    low, high, low_dof, high_dof = ses
    ordered = sorted((low * quantile(k, low_dof), high * quantile(k, high_dof)))
    return low, high, ordered[0], ordered[1]
