"""How often the tipping-point intervals cover the truth: a simulation of the measurement.

Curves with a known crossing (``L_STAR``), measured under the noise a shared machine adds:
independent noise per call, a load level per run, a slow load walk within a run, and a small
independent part per (run, length, model). ``paired=True`` mirrors effx's design (calls
alternate B E B E at each length); ``paired=False`` the old one (the two series timed apart, with
a load shift between them). ``coverage`` is the fraction of simulated datasets whose reported 95%
interval contains L_STAR: the tests require >= 0.90 for the paired design, and the tipping-point
chapter reports it for the runs and repeats it used.
"""
from __future__ import annotations

import numpy as np

from effx.analysis.tipping import tipping_point

L_STAR = 1500.0
SIM_GRID = 64 * 2 ** (np.arange(15) / 2)          # half octaves, 64 .. 8192


def overhead_curves(L):
    """Baseline 1e-6 L^2 + 0.5 and efficient s L + 1 (fixed costs too), equal at L_STAR."""
    L = np.asarray(L, float)
    s = (1e-6 * L_STAR ** 2 + 0.5 - 1.0) / L_STAR
    return 1e-6 * L ** 2 + 0.5, s * L + 1.0


def simulate(rng, runs=3, reps=5, sigma=0.05, run_shift=0.1, walk=0.02, indep=0.01,
             paired=True, series_shift=0.1):
    """One dataset in the `tipping_point` layout: per length, per run, (baseline, efficient) pairs.

    Noise model, all multiplicative: each call gets independent noise (sigma); the machine's load
    multiplies every call of a run by a run level (run_shift) times a slow random walk over the
    calls of the sweep (walk per call); and each (run, length, model) gets a small independent
    factor (indep). paired=True: at each length the calls alternate B E B E, so both models see
    (almost) the same load. paired=False: the baseline's whole series runs first, then the
    efficient one, after a load shift (series_shift): the old, unpaired design.
    """
    b0, e0 = overhead_curves(SIM_GRID)
    n = SIM_GRID.size
    out = [[] for _ in range(n)]
    for _ in range(runs):
        T = 2 * n * reps
        load = np.exp(rng.normal(0, run_shift) + np.cumsum(rng.normal(0, walk, T)))
        if paired:
            t = np.arange(T).reshape(n, reps, 2)
            lb, le = load[t[..., 0]], load[t[..., 1]]
        else:
            t = np.arange(T).reshape(2, n, reps)
            lb, le = load[t[0]], load[t[1]] * np.exp(rng.normal(0, series_shift))
        B = b0[:, None] * lb * np.exp(rng.normal(0, indep, (n, 1)) + rng.normal(0, sigma, (n, reps)))
        E = e0[:, None] * le * np.exp(rng.normal(0, indep, (n, 1)) + rng.normal(0, sigma, (n, reps)))
        for j in range(n):
            out[j].append(list(zip(B[j], E[j])))
    return out


def coverage(n_sim: int, seed: int, n_boot: int = 1000, **kw) -> float:
    """Fraction of simulated datasets whose reported 95 % interval contains L_STAR."""
    rng, hits = np.random.default_rng(seed), 0
    for i in range(n_sim):
        tp = tipping_point(SIM_GRID, simulate(rng, **kw), n_boot=n_boot, seed=i)
        hits += tp.status == "crossing" and tp.ci_low <= L_STAR <= tp.ci_high
    return hits / n_sim
