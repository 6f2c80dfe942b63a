"""Analysis of Transkimmer study results: from the tidy records to the chapter's tables and text.

Input: the tidy results table (one row per (job, metric): the columns of ``Job.key()``, ``metric``,
``value``, ``status``, ``info_*``), e.g. ``ResultStore.table()``. Records of other protocols
(``jobs.PROTOCOL``) are ignored. Every comparison is made within one seed: Transkimmer against the
baseline trained on for the same budget (``baseline_continued``) when it exists, top-k pruning
and fewer layers against the once-trained baseline; ``seed_summary`` then gives means over seeds
with 95% t-intervals, beside the dev set's own sampling error (binomial, for accuracy). What is
said against the paper's claims is ``claims``.
"""
from __future__ import annotations

import dataclasses
import functools
import json

import numpy as np
import pandas as pd
from scipy import stats

from effx.transkimmer.jobs import DEFAULT_PREDICTOR_LR, PROTOCOL, STATES_TIMED, Job

#: the issue's SST-2 benchmark: within 1 point, >= 3x FLOPs, a real wall-clock speedup >= 0.6 of it
TARGET = {"max_delta": -1.0, "flops_speedup": 3.0, "wall_over_flops": 0.6, "wall_speedup": 1.0}
#: a wall clock timed on weights whose training-loss curve drifts further than this from the
#: recorded run's was timed on a retrain that took other skim decisions (float rounding alone
#: stays below 1e-4 in every record)
RETRAIN_DRIFT = 1e-3


def main_metric(task: str) -> str:
    from effx.data.glue import task_spec
    return task_spec(task).metrics[0]


@functools.lru_cache(maxsize=None)          # reads the task's TSVs: once per task and subset
def majority_metric(task: str, dev_subset: int = 0, metric: str | None = None) -> float:
    """Dev ``metric`` (default: the task's main one) of always predicting the majority training
    class (0 for regression)."""
    from effx.data.glue import glue_metric, load_glue, task_spec
    if task_spec(task).is_regression:
        return 0.0
    train, dev = load_glue(task, "train"), load_glue(task, "dev")
    if dev_subset and len(dev) > dev_subset:        # the sample of data.load_split
        dev = dev.sample(n=dev_subset, random_state=0).reset_index(drop=True)
    label = train["label"].mode().iloc[0]
    scores = glue_metric(task, np.full(len(dev), label), dev["label"].to_numpy())
    return scores[metric or main_metric(task)]


def _id(key: dict) -> str:
    return json.dumps(key, sort_keys=True)


def jobs_frame(table: pd.DataFrame) -> pd.DataFrame:
    """One row per job of this protocol with status 'ok': 'job' (the Job), 'id', one column per
    metric, and the info columns (of its own unit and its wall clock's; not its removal paths')."""
    if table.empty or "protocol" not in table:
        return pd.DataFrame()
    ok = table[(table.status == "ok") & (table.protocol == PROTOCOL)]
    if "measure" in ok:                          # the removal paths' timings: devices.py reads them
        ok = ok[ok.measure.ne("removal_paths")]
    rows = {}
    for _, r in ok.iterrows():
        job = Job.from_key(r.dropna().to_dict())
        row = rows.setdefault(_id(job.key()), {"job": job, "id": _id(job.key()), **job.key()})
        if pd.notna(r.get("metric")):
            row[r.metric] = r.value
        row.update({k: v for k, v in r.items() if str(k).startswith("info_") and present(v)})
    return pd.DataFrame(list(rows.values()))


def present(v) -> bool:
    """Not None and not NaN."""
    return not (v is None or (isinstance(v, float) and np.isnan(v)))


def recipe(job: Job) -> str:
    """What a Transkimmer job adds to the plain recipe ('distill 0.5 + frozen 0.5 ep'), or ''."""
    return " + ".join(([f"distill {job.distill:g}"] if job.distill else [])
                      + ([f"frozen {job.frozen_epochs:g} ep"] if job.frozen_epochs else []))


def setting(job: Job) -> str:
    """Short text naming what distinguishes a job within its task and seed."""
    if job.method == "transkimmer":
        extra = "".join([f" {job.variant}" if job.variant != "fixed" else "",
                         f" predictor lr {job.predictor_lr:g}"
                         if job.predictor_lr != DEFAULT_PREDICTOR_LR else "",
                         f" {recipe(job)}" if recipe(job) else "",
                         " from pre-trained" if job.init == "pretrained" else ""])
        return f"lambda {job.skim_lambda:g}{extra}"
    return {"baseline": "baseline", "baseline_continued": f"baseline +{job.skim_epochs:g} ep",
            "fewer_layers": f"{job.layer_choice} {job.layers} layers",
            "topk_pruning": f"top-k {job.flops_target:.0%} FLOPs"}[job.method]


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per job: its main metric (x100) against its references (x100, same seed), the
    dev set's binomial standard error of accuracy (tasks scored by accuracy or F1 + accuracy),
    FLOPs and wall-clock speedups over the unpadded baseline (1 for the plain encoder itself) with
    the per-example times behind them, kept fraction, and what padding alone would have shown."""
    wide = jobs_frame(table)
    if wide.empty:
        return pd.DataFrame()
    by_id = wide.set_index("id")
    get = lambda row, k: row[k] if row is not None and k in row and present(row[k]) else np.nan  # noqa: E731
    rows = []
    for _, r in wide.iterrows():
        job, m = r.job, main_metric(r.task)
        base_id = _id(job.with_method("baseline").key())
        base = by_id.loc[base_id] if base_id in by_id.index else None
        equal, eq_id = None, ""
        if job.method == "transkimmer":
            eq_id = _id(job.with_method("baseline_continued").key())
            equal = by_id.loc[eq_id] if eq_id in by_id.index else None
        ref = r if job.method == "baseline" else (equal if equal is not None else base)
        keeps = [c for c in r.index if str(c).startswith("keep_l") and present(r[c])]
        n, p, acc = get(r, "info_dev_examples"), get(r, m), get(r, "accuracy")
        plain = job.method in ("baseline", "baseline_continued")
        own = "reference" if plain else "method"                        # whose times are its own
        rows.append({
            "task": r.task, "method": job.method, "setting": setting(job), "seed": job.seed,
            "group": _id({k: v for k, v in job.key().items() if k != "seed"}),
            "metric": m, "value": 100 * p, "baseline": 100 * get(base, m),
            "equal_budget": 100 * get(equal, m), "equal_id": eq_id if equal is not None else "",
            "reference": 100 * get(ref, m),
            "delta": 100 * (p - get(ref, m)),
            "dev_n": n, "dev_se": 100 * np.sqrt(acc * (1 - acc) / n),   # of accuracy (NaN: none)
            "dev_correct": r.get("info_dev_correct", np.nan),          # per example: '0' / '1'
            "majority": 100 * majority_metric(r.task, job.dev_subset),
            "accuracy": 100 * acc, "baseline_accuracy": 100 * get(base, "accuracy"),
            "majority_accuracy": (100 * majority_metric(r.task, job.dev_subset, "accuracy")
                                  if present(acc) else np.nan),
            "kept": float(np.mean([r[c] for c in keeps])) if keeps else 1.0,
            "flops_speedup": get(r, "flops_reference") / get(r, "flops_method"),
            "counted_flops_speedup": get(r, "counted_flops_reference") / get(r, "counted_flops_method"),
            "wall_b1": 1.0 if plain else get(r, "speedup_b1"),
            "wall_b32": 1.0 if plain else get(r, "speedup_b32"),
            "wall_random_b32": 1.0 if plain else get(r, "speedup_random_b32"),
            # median ms per example: the job's own forward (a plain encoder's is its reference,
            # timed alone), and its reference's, timed in alternation with it
            "ms_b1": 1000 * get(r, f"time_{own}_b1"), "ms_b32": 1000 * get(r, f"time_{own}_b32"),
            "ref_ms_b1": 1000 * get(r, "time_reference_b1"),
            "ref_ms_b32": 1000 * get(r, "time_reference_b32"),
            "padding_flops": get(r, f"flops_pad{job.max_length}") / get(r, "flops_reference"),
            "padding_flops_random_b32": get(r, "flops_random_b32") / get(r, "flops_reference"),
            "padding_wall_b32": get(base, f"padding_pad{job.max_length}_b32"),
            "padding_wall_random_b32": get(base, "padding_random_b32"),
            "masked_value": 100 * get(r, f"masked_{m}"),
            "epochs": job.epochs + (job.skim_epochs if job.method in
                                    ("transkimmer", "baseline_continued") else 0.0),
            "skim_lambda": job.skim_lambda if job.method == "transkimmer" else np.nan,
            "predictor_lr": job.predictor_lr if job.method == "transkimmer" else np.nan,
            "id": r.id, "recipe": recipe(job) if job.method == "transkimmer" else "",
            "plain_id": (_id(dataclasses.replace(job, distill=0.0, frozen_epochs=0.0).key())
                         if job.method == "transkimmer" else ""),
            "variant": job.variant if job.method == "transkimmer" else "",
            "lambda_official": get(r, "info_lambda_official_equivalent"),
            "timed_forward": _timed_forward(r, job),
            # the wall clock's weights against the recorded run (execute.loss_curve_gap)
            "wall_curve_gap": get(r, "info_loss_curve_gap"),
        })
    out = pd.DataFrame(rows)
    out["learned"] = beats_majority(out.baseline_accuracy, out.baseline, out)
    out["wall_over_flops"] = out.wall_b32 / out.flops_speedup
    return out


def beats_majority(accuracy: pd.Series, value: pd.Series, f: pd.DataFrame) -> pd.Series:
    """Whether a model clearly beats the majority-class predictor: in accuracy (where the task has
    it) by 1 point and two standard errors of the dev set's accuracy (``f.dev_se``); else in the
    main metric (MCC, correlation) by 1 point. F1 is no guide: always answering the majority class
    scores 81 on MRPC."""
    by_accuracy = accuracy > f.majority_accuracy + np.maximum(1.0, 2 * f.dev_se)
    return by_accuracy.where(f.dev_se.notna(), value > f.majority + 1.0)


def _timed_forward(r: pd.Series, job: Job) -> str:
    """Which removal path a job's wall clock timed ('' for jobs without one or not timed)."""
    if job.method not in ("transkimmer", "topk_pruning") or not present(r.get("speedup_b32")):
        return ""
    said = r.get("info_timed_forward")
    return said if present(said) else STATES_TIMED


def t_interval(values, confidence: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the t-interval); half-width NaN with fewer than 2 values."""
    v = np.asarray([x for x in values if present(x)], dtype=float)
    if len(v) == 0:
        return np.nan, np.nan
    if len(v) < 2:
        return float(v.mean()), np.nan
    half = stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean()), float(half)


SEED_COLUMNS = ("value", "delta", "baseline", "reference", "flops_speedup", "wall_b1", "wall_b32",
                "wall_random_b32", "kept")


def seed_summary(summ: pd.DataFrame) -> pd.DataFrame:
    """One row per setting: means over seeds and 95% t-interval half-widths ('<col>_ci') of the
    metric, its change against the reference, speedups and kept fraction; 'seeds'; 'dev_se'
    (the dev set's own sampling error of one run, accuracy only); 'baseline_accuracy' (the
    baseline's mean accuracy, also where the task's metric is another) and 'accuracy' (the
    setting's own); 'beats_majority' (``beats_majority`` on the seeds' means); 'wall_seeds' (the
    seeds whose wall clock is measured: the wall-clock means are over these); 'timed_forward' (the removal
    paths those wall clocks timed, joined by ' + ' when they differ); 'wall_retrained' (of those
    seeds, how many were timed on a retrain whose loss curve drifted from the recorded run's by more
    than RETRAIN_DRIFT; 'wall_curve_gap' the largest drift); 'has_equal_budget' (False: a
    Transkimmer delta is against the once-trained baseline, flattered by its extra training)."""
    if summ.empty:
        return summ
    rows = []
    for _, g in summ.groupby("group", sort=False):
        first = g.iloc[0]
        row = {k: first[k] for k in ("task", "method", "setting", "metric", "variant", "skim_lambda",
                                     "predictor_lr",
                                     "epochs", "majority", "majority_accuracy", "padding_flops",
                                     "padding_wall_b32",
                                     "padding_flops_random_b32", "padding_wall_random_b32",
                                     "lambda_official")}
        row.update(seeds=len(g), wall_seeds=int(g.wall_b32.notna().sum()),
                   timed_forward=" + ".join(sorted(set(g.timed_forward) - {""})),
                   wall_retrained=int((g.wall_curve_gap > RETRAIN_DRIFT).sum()),
                   wall_curve_gap=float(g.wall_curve_gap.max()),
                   dev_se=float(g.dev_se.mean()), learned=bool(g.learned.all()),
                   has_equal_budget=bool(g.equal_budget.notna().all()))
        row["baseline_accuracy"] = float(g.baseline_accuracy.mean())   # NaN: no accuracy
        row["accuracy"] = float(g.accuracy.mean())
        for c in SEED_COLUMNS:
            row[c], row[f"{c}_ci"] = t_interval(g[c])
        row["wall_over_flops"] = row["wall_b32"] / row["flops_speedup"]
        rows.append(row)
    out = pd.DataFrame(rows)
    out["beats_majority"] = beats_majority(out.accuracy, out.value, out)
    return out


def pick(g: pd.DataFrame) -> pd.Series:
    """The selection rule of every summary: among settings (rows of ``seed_summary``), the largest
    FLOPs speedup within 1 point of its reference, else the setting closest to it."""
    ok = g[(g.delta >= TARGET["max_delta"]) & g.flops_speedup.notna()]
    return ok.loc[ok.flops_speedup.idxmax()] if len(ok) else g.loc[g.delta.idxmax()]


def not_beaten(g: pd.DataFrame, x: str = "flops_speedup") -> pd.Series:
    """Per row of ``g``: no other row is at least as good on both the metric (``value``) and
    ``x`` and better on one of them (the Pareto front)."""
    return g.apply(lambda r: not ((g.value >= r.value) & (g[x] >= r[x])
                                  & ((g.value > r.value) | (g[x] > r[x]))).any(), axis=1)


def within(r: pd.Series) -> bool:
    """Whether a setting is within 1 point of its reference."""
    return bool(r.delta >= TARGET["max_delta"])


def headline(seeds: pd.DataFrame) -> pd.DataFrame:
    """One Transkimmer setting per (task, variant), at the task's largest budget, among tasks whose
    baseline learned, picked by ``pick``."""
    tk = seeds[(seeds.method == "transkimmer") & seeds.learned] if len(seeds) else seeds
    if tk.empty:
        return tk
    tk = tk[tk.epochs == tk.groupby("task").epochs.transform("max")]
    rows = [pick(g) for _, g in tk.groupby(["task", "variant"], sort=False)]
    return pd.DataFrame(rows, columns=tk.columns).reset_index(drop=True)


SEARCH_GROUP = ["task", "variant", "skim_lambda", "epochs"]


def lr_search(seeds: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The predictor learning-rate search: one row per rate (Transkimmer rows of ``seed_summary``
    with their equal-budget baseline recorded), and per (task, variant, lambda, budget) one
    sentence: the rates no other rate beats on both points and FLOPs speedup, the dominated ones,
    and those within 1 point with a real FLOPs speedup (> 1x). At one lambda a rate changes how
    much is skimmed as well as how well, so no single rate is declared best."""
    tk = seeds[(seeds.method == "transkimmer") & seeds.has_equal_budget] if len(seeds) else seeds
    if tk.empty:
        return tk, "No predictor learning-rate search with its equal-budget baseline is recorded."
    cols = SEARCH_GROUP + ["predictor_lr", "seeds", "value", "reference", "delta", "kept",
                           "flops_speedup"]
    table = tk[cols].sort_values(SEARCH_GROUP + ["predictor_lr"]).reset_index(drop=True)
    said = []
    rate = lambda r: f"{r.predictor_lr:g} ({r.delta:+.1f} points at {r.flops_speedup:.2f}x)"  # noqa: E731
    for (task, _, lam, epochs), g in table.groupby(SEARCH_GROUP, sort=False):
        best = not_beaten(g)               # one lambda and budget: one reference, value ~ delta
        front = list(g[best].itertuples())
        beaten = [f"{r:g}" for r in g.predictor_lr[~best]]
        useful = [f"{r.predictor_lr:g}" for r in front if within(r) and r.flops_speedup > 1]
        said.append(f"{task}, lambda {lam:g}, {epochs:g} epochs in all. Rates no other beats on "
                    f"both points and FLOPs speedup: {', '.join(rate(r) for r in front)}"
                    + (f"; beaten on both: {', '.join(beaten)}" if beaten else "")
                    + ". Within 1 point with a real FLOPs speedup (> 1x): "
                    + (", ".join(useful) if useful else "none") + ".")
    return table, " ".join(said)


def curves(table: pd.DataFrame) -> pd.DataFrame:
    """Training curves of every trained job, long: task, setting, seed, step, quantity (task loss,
    kept fraction), value."""
    wide = jobs_frame(table)
    if wide.empty or "info_curves" not in wide:
        return pd.DataFrame()
    rows = []
    for _, r in wide[wide.info_curves.map(lambda c: isinstance(c, dict))].iterrows():
        c = r.info_curves
        for quantity, key in (("task loss", "task_loss"), ("kept fraction", "kept")):
            rows += [{"task": r.task, "setting": setting(r.job), "seed": r.seed, "step": s,
                      "quantity": quantity, "value": v} for s, v in zip(c["step"], c[key])]
    return pd.DataFrame(rows)
