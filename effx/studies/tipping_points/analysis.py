"""Analysis of the tipping-point study: tidy frames, the tipping table, the headline counts.

The estimator is ``effx.analysis`` (paired hierarchical bootstrap, statuses, ties); this module
turns the study's records into its input and its output into what the chapter cites.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from effx.analysis import tipping_table as tt
from effx.models import builders

#: the costs compared; the first three are timed (paired samples), the last deterministic
COSTS = ("latency_s", "throughput_samples_per_s", "peak_memory_bytes", "flops")
SERIES = ["modality", "mode", "batch", "device", "dtype", "size"]
UNITS = {name: m.unit for name, m in builders.MODALITIES.items()}


def frame(store, P: dict | None = None) -> pd.DataFrame:
    """One row per (model, metric, length, run) with paired samples and a status, as
    ``effx.analysis.tipping_table`` reads it. A model that was not timed because of the time
    budget gets status ``over_budget`` for the timed metrics. ``P`` restricts to its models."""
    rows = []
    for rec in store.records():
        pt = rec["point"]
        if "model" not in pt:                      # a unit-level record (worker killed, failed)
            continue
        if P is not None and (pt["modality"] not in P["modalities"]
                              or pt["model"] not in P["models"][pt["modality"]]
                              or pt["length"] not in P["lengths"][pt["modality"]]):
            continue
        info = rec.get("info", {})
        for metric in COSTS:
            m = rec["metrics"].get(metric)
            status = rec["status"]
            if status == "ok" and m is None:
                timed = metric in ("latency_s", "throughput_samples_per_s")
                status = "over_budget" if timed and info.get("stopped_by_budget_s") else "missing"
            samples = (m.get("samples") or [m["value"]]) if m else []
            rows.append({**{c: pt.get(c) for c in SERIES}, "model": pt["model"], "metric": metric,
                         "length": pt["length"], "run": pt.get("run", 0), "samples": samples,
                         "status": status, "value": m["value"] if m else np.nan,
                         "throughput_batch": info.get("throughput_batch")})
    return pd.DataFrame(rows)


def tipping(store, P: dict) -> pd.DataFrame:
    """The tipping table of the current parameters: one row per (pair, metric, mode, ...)."""
    data = frame(store, P)
    if data.empty:
        return pd.DataFrame()
    baseline_of = {}
    for mod in P["modalities"]:
        for eff, base in builders.pairs(mod, P["models"][mod]):
            baseline_of.setdefault(eff, []).append(base)
    out = tt.tipping_table(data[SERIES + ["model", "metric", "length", "run", "samples", "status"]],
                           baseline_of, series_cols=SERIES, n_boot=P["n_boot"],
                           length_unit=UNITS, unit_by="modality")
    return out


def shown(tip: pd.DataFrame) -> pd.DataFrame:
    """The tipping table as the chapter shows it: one row per pair and mode, metrics across."""
    if tip.empty:
        return tip
    names = {"latency_s": "latency", "throughput_samples_per_s": "throughput",
             "peak_memory_bytes": "memory", "flops": "FLOPs"}
    t = tip.assign(metric=tip.metric.map(names))
    wide = t.pivot_table(index=["modality", "model", "baseline", "mode"], columns="metric",
                         values="label", aggfunc="first")
    return wide[[c for c in names.values() if c in wide.columns]].reset_index()


def typical_band(modality: str, typical: pd.DataFrame) -> tuple[float, float] | None:
    """(median, p99) of typical dataset lengths in the modality's unit: the GLUE dev sets for
    text (smallest median, largest p99), the real speech clips, 224 px for vision."""
    unit = {"text": "tokens", "controlled": "tokens", "speech": "seconds",
            "vision": "px (side)", "controlled_vision": "px (side)"}[modality]
    mod = {"controlled": "text", "controlled_vision": "vision"}.get(modality, modality)
    rows = typical[(typical.modality == mod) & (typical.unit == unit)]
    if mod == "vision":
        rows = rows[rows.dataset.str.contains("ImageNet")]
    if rows.empty:
        return None
    return float(rows["median"].min()), float(rows["p99"].max())


def headline(tip: pd.DataFrame, bands: dict) -> dict:
    """Counts the chapter and the introduction cite, from determined outcomes only; each status
    its own category (undetermined outcomes are counted as such, never as a crossing)."""
    out = {"pairs": int(len(tip))}
    for status in ("crossing", "cheaper_everywhere", "not_cheaper", "tie", "undetermined",
                   "no_data"):
        out[status] = int((tip.status == status).sum()) if len(tip) else 0
    out["stopped_by_budget"] = int(tip.stopped_at.notna().sum()) if len(tip) else 0
    above = below = 0
    for _, r in tip[tip.status == "crossing"].iterrows() if len(tip) else []:
        band = bands.get(r.modality)
        if band is not None:
            above, below = (above + 1, below) if r.tipping_length > band[1] else (above, below + 1)
    out.update(above_typical=above, below_typical=below)
    # fused vs eager baseline: latency tipping points of one efficient model against both
    lat = tip[(tip.metric == "latency_s") & (tip.status == "crossing")] if len(tip) else tip
    ratios = []
    for _, g in lat.groupby(["modality", "model", "mode"]) if len(lat) else []:
        fused = g[~g.baseline.str.contains("eager")]
        eager = g[g.baseline.str.contains("eager")]
        if len(fused) and len(eager):
            ratios.append(float(fused.tipping_length.iloc[0] / eager.tipping_length.iloc[0]))
    out["fused_over_eager_pairs"] = len(ratios)
    out["fused_over_eager_median"] = (f"{np.median(ratios):.2f}" if ratios
                                      else "n/a (no pair crosses against both)")
    return out


def what_ran(store, P: dict) -> pd.DataFrame:
    """The attention path each model took and the length it really processed, per length."""
    rows = []
    for rec in store.records():
        pt, info = rec["point"], rec.get("info", {})
        if "model" not in pt or pt.get("run", 0) != 0 or pt["modality"] not in P["modalities"]:
            continue
        rows.append({"modality": pt["modality"], "model": pt["model"], "length": pt["length"],
                     "status": rec["status"], "attention path": info.get("attention_path"),
                     "observed": info.get("attention_path_observed", ""),
                     "sequence": info.get("sequence_length"), "padded": info.get("padded_length"),
                     "timing": info.get("timing", ""),
                     "throughput batch": info.get("throughput_batch")})
    return pd.DataFrame(rows).sort_values(["modality", "model", "length"]) if rows else pd.DataFrame()


def fairness_notes(store, P: dict) -> str:
    """What makes a pair unlike-for-like, computed from what ran (markdown bullets): BigBird's
    switch to full attention, Longformer's padding and global attention, the vision pairs."""
    ran = what_ran(store, P)
    data = frame(store, P)
    notes = []
    if len(ran) and (ran.model == "bigbird").any():
        bb = ran[ran.model == "bigbird"]
        full = bb[bb.observed == "original_full"].length
        recs = [r for r in store.records() if r["point"].get("model") == "bigbird"]
        limit = next((r["info"].get("full_attention_up_to") for r in recs
                      if r["info"].get("full_attention_up_to")), None)
        notes.append(f"- **BigBird** runs BERT's full attention up to {limit} tokens (its config's "
                     f"rule; observed in its attention module at "
                     f"{', '.join(f'{x:g}' for x in full) or 'no measured length'} tokens): "
                     "against BERT it can only tie there.")
    flops = data[(data.metric == "flops") & (data.status == "ok")] if len(data) else data
    if len(flops) and {"longformer", "bert"} <= set(flops.model):
        m = flops.pivot_table(index="length", columns="model", values="value", aggfunc="first")
        m = m[["bert", "longformer"]].dropna()
        if len(m):
            L = m.index.min()
            lf = ran[(ran.model == "longformer") & (ran.length == L)]
            padded = lf["padded"].iloc[0] if len(lf) else None
            notes.append(f"- **Longformer** pads every input to a multiple of its window (at {L:g} "
                         f"tokens it processes {padded}) and adds global attention for one token "
                         f"with its own Q/K/V projections: at {L:g} tokens it counts "
                         f"{m.longformer[L] / m.bert[L]:.2f}x BERT's FLOPs.")
    if "vision" in P["modalities"]:
        notes.append("- **Swin and PVTv2** differ from ViT in far more than attention (stages, "
                     "convolutions, patch merging): the *controlled vision* pair, where only the "
                     "attention changes, is the like-for-like comparison.")
    return "\n".join(notes) or "Nothing to note for the models measured."
