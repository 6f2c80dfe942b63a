"""Margins of a change judged on few degrees of freedom.

A change between two runs (a recipe against its plain run, a setting against its baseline) has
a standard error from two sources: a sampling error known almost exactly (the dev set's, from
hundreds of examples) and the training's own noise, estimated from the spread of changes over a
few seeds. Three things keep the margin honest when the second rests on few degrees of freedom:

* ``pooled_spread`` pools the spread over groups (settings, recipes) and counts its degrees of
  freedom with shared reference runs taken into account (``effective_dof``): changes against
  one run (a seed's plain run, behind every recipe's change at that seed) are not independent;
* ``combined`` gives the two standard errors of overlapping sources (the larger alone, both in
  quadrature) with their degrees of freedom (Welch-Satterthwaite);
* ``margins`` multiplies each by the t quantile of its degrees of freedom (``quantile``, 95% for
  a family of k comparisons, Bonferroni); ``verdict`` judges a change against both.

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
    refs = list(dict.fromkeys(ref for g in groups for ref in g))
    n_changes = sum(len(g) for g in groups)
    column = {ref: n_changes + i for i, ref in enumerate(refs)}
    rows, own = [], 0
    for g in groups:     # each change's coefficients on the runs: +1 its own, -1 its reference
        coefficients = np.zeros((len(g), n_changes + len(refs)))
        for i, ref in enumerate(g):
            coefficients[i, own + i], coefficients[i, column[ref]] = 1.0, -1.0
        own += len(g)
        rows.append(coefficients - coefficients.mean(axis=0))
    deviations = np.vstack(rows)
    cov = deviations @ deviations.T
    return float(np.trace(cov) ** 2 / (cov ** 2).sum())


def combined(sampling_low: float, sampling_high: float, train_sd: float,
             train_dof: float) -> tuple[float, float, float, float]:
    """(low, high, low's and high's degrees of freedom): standard errors from a sampling error
    known almost exactly (between sampling_low and sampling_high, its degrees of freedom taken
    as infinite; NaN: none, then all NaN) and the training's (``train_sd`` with ``train_dof``;
    NaN: unknown, then the sampling error alone): the larger of the two, and both in quadrature
    (for sources that overlap the truth lies between). Degrees of freedom by Welch-Satterthwaite,
    the larger one's too (its square taken as the training's variance plus a known remainder),
    so that they change smoothly where the two sources cross."""
    if not np.isfinite(sampling_low):
        return np.nan, np.nan, np.nan, np.nan
    if not np.isfinite(train_sd):
        return float(sampling_low), float(sampling_high), np.inf, np.inf
    if not train_dof > 0:
        raise ValueError(f"combined: train_dof must be a positive number of degrees of freedom "
                         f"with train_sd {train_sd}, got {train_dof}")
    low, high = max(sampling_low, train_sd), float(np.hypot(sampling_high, train_sd))

    def welch(se):
        return se ** 4 * train_dof / train_sd ** 4 if train_sd > 0 else np.inf
    return float(low), high, welch(low), welch(high)


def margins(ses: tuple, k: int) -> tuple[float, float, float, float]:
    """(low, high) standard errors with their degrees of freedom (as ``combined`` returns them)
    -> (low, high, low's margin, high's margin): each standard error times its quantile for a
    family of k. With few degrees of freedom the smaller standard error can carry the larger
    margin."""
    low, high, low_dof, high_dof = ses
    return low, high, low * quantile(k, low_dof), high * quantile(k, high_dof)


def verdict(change: float, margin_a: float, margin_b: float) -> str:
    """'beyond' both margins, 'within' both, or 'at the edge of' the noise."""
    if abs(change) > max(margin_a, margin_b):
        return "beyond"
    return "within" if abs(change) <= min(margin_a, margin_b) else "at the edge of"
