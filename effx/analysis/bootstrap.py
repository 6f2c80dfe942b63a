"""Hierarchical bootstrap of a pooled median: resample runs, then repeats within each run.

The data of one curve are, per length j and run r, a 1-D array of values (for the tipping point:
the log cost ratios log(efficient / baseline) of the paired repeats of run r at length j). A run
is one process that measured the whole sweep, so run r is the *same* process at every length:
that is why runs are resampled once per replicate and shared by all lengths (a run's drift
reaches all its lengths), while repeats are resampled independently per (run, length).

One replicate, for every length at once:
  1. draw R run indices with replacement from the R runs (R = 1: the run itself, repeats only);
  2. in every drawn run, draw as many repeats as that run has at the length, with replacement;
  3. pool the drawn values of all drawn runs and take their median (NaN where none were drawn).

Vectorised over replicates; the loop runs over lengths only (memory stays n_boot x R x M).
"""
from __future__ import annotations

import numpy as np


def nan_median(x: np.ndarray) -> np.ndarray:
    """Median over the last axis ignoring NaN (NaN where a row has no value).

    Faster than ``np.nanmedian`` on many short rows: one sort (NaN sorts last), then the middle
    one or two of the m finite values of each row.
    """
    x = np.sort(x, axis=-1)
    m = np.sum(~np.isnan(x), axis=-1)
    lo = np.take_along_axis(x, np.maximum((m - 1) // 2, 0)[..., None], axis=-1)[..., 0]
    hi = np.take_along_axis(x, np.maximum(m // 2, 0)[..., None], axis=-1)[..., 0]
    return np.where(m > 0, 0.5 * (lo + hi), np.nan)


def padded(per_length: list[list[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Runs of unequal size to arrays: values (n, R, M) NaN-padded and counts (n, R).

    per_length[j][r]: 1-D values of run r at length j (possibly empty). Every length must list
    the same R runs, in the same order.
    """
    n = len(per_length)
    R = max((len(runs) for runs in per_length), default=0)
    M = max((len(v) for runs in per_length for v in runs), default=0)
    values = np.full((n, R, max(M, 1)), np.nan)
    counts = np.zeros((n, R), dtype=np.int64)
    for j, runs in enumerate(per_length):
        for r, v in enumerate(runs):
            values[j, r, :len(v)] = v
            counts[j, r] = len(v)
    return values, counts


def pooled_medians(per_length: list[list[np.ndarray]]) -> np.ndarray:
    """The point estimate: per length, the median of all values of all runs pooled. (n,)"""
    values, _ = padded(per_length)
    n, R, _ = values.shape
    return nan_median(values.reshape(n, -1)) if R else np.full(n, np.nan)


def hierarchical_medians(per_length: list[list[np.ndarray]], n_boot: int,
                         rng: np.random.Generator) -> np.ndarray:
    """Bootstrap replicates of `pooled_medians`: (n_boot, n), NaN where a replicate drew no value.

    Runs are drawn once per replicate for all lengths; repeats per (replicate, run, length).
    """
    values, counts = padded(per_length)
    n, R, M = values.shape
    out = np.full((n_boot, n), np.nan)
    if n == 0 or R == 0:
        return out
    pick = rng.integers(0, R, size=(n_boot, R))                   # (B, R) runs, shared by lengths
    slot = np.arange(M)
    for j in range(n):
        cnt = counts[j][pick][..., None]                          # (B, R, 1) repeats of each run
        idx = np.minimum((rng.random((n_boot, R, M)) * cnt).astype(np.int64), M - 1)
        draws = values[j][pick[..., None], idx]                   # (B, R, M)
        draws = np.where(slot < cnt, draws, np.nan)               # a run draws only its own size
        out[:, j] = nan_median(draws.reshape(n_boot, R * M))
    return out
