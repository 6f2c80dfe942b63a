"""Figures and cited numbers of the cost-breakdown chapter (``effx.studies.cost_breakdown``).

``plot_shares`` draws, per modality, one row per model and one column per cost (latency, FLOPs,
saved activations): the share of each component, stacked, versus input length. Attention
components are drawn in reds, the rest in blues and greys, so "how much is attention" reads at
a glance. ``headline_numbers`` computes what the prose cites (glued, never typed).
"""
from __future__ import annotations

import pandas as pd

from effx.models.components import ATTENTION_ALL, LABELS
from effx.studies.cost_breakdown import KINDS, UNATTRIBUTED
from effx.studies.tipping_points import LENGTH_LABELS

COLORS = {"input": "#4d4d4d", "qkv_projection": "#f4a582", "attention_core": "#b2182b",
          "output_projection": "#d6604d", "feed_forward": "#2166ac", "norm_residual": "#92c5de",
          "other": "#bababa", UNATTRIBUTED: "#f0f0f0"}
ORDER = ["attention_core", "qkv_projection", "output_projection", "feed_forward", "norm_residual",
         "input", "other", UNATTRIBUTED]
BASELINES = {"text": "bert", "speech": "hubert", "vision": "vit", "controlled": "dense_sdpa"}


def plot_shares(frame: pd.DataFrame, modality: str, mode: str, typical: float | None = None,
                kinds=("time", "flops", "memory")):
    """Stacked shares (%) of each component versus length; rows = models, columns = kinds."""
    import matplotlib.pyplot as plt
    data = frame[(frame.modality == modality) & (frame["mode"] == mode)]
    kinds = [k for k in kinds if k in set(data.kind) and data[data.kind == k].value.sum() > 0]
    models = list(dict.fromkeys(data.model))
    if data.empty or not kinds:
        return None
    fig, axes = plt.subplots(len(models), len(kinds), figsize=(3.6 * len(kinds), 2.3 * len(models) + 0.9),
                             squeeze=False, sharex=True, sharey=True)
    for i, model in enumerate(models):
        for j, kind in enumerate(kinds):
            ax = axes[i][j]
            d = data[(data.model == model) & (data.kind == kind)]
            wide = d.pivot_table(index="length", columns="component", values="share", aggfunc="first")
            comps = [c for c in ORDER if c in wide.columns and wide[c].abs().sum() > 0]
            if len(wide) == 0:
                ax.set_axis_off()
                continue
            x = wide.index.to_numpy(dtype=float)
            ys = [100 * wide[c].clip(lower=0).to_numpy() for c in comps]
            if len(x) == 1:                                  # one length: draw a bar, not an area
                bottom = 0.0
                for c, y in zip(comps, ys):
                    ax.bar(x, y, bottom=bottom, width=x * 0.3, color=COLORS[c])
                    bottom += y
            else:
                ax.stackplot(x, ys, colors=[COLORS[c] for c in comps], linewidth=0.3, edgecolor="white")
            for xv in x:
                ax.axvline(xv, color="white", lw=0.6, alpha=0.7)
            if typical and x.min() <= typical <= x.max():
                ax.axvline(typical, color="black", ls="--", lw=1)
            ax.set_xscale("log")
            if len(x) > 1:
                ax.set_xlim(x.min(), x.max())
            ax.set_xticks(x, [f"{v:g}" for v in x], fontsize=8)
            ax.minorticks_off()
            ax.set_ylim(0, 100)
            ax.set_title(f"{model}: {KINDS[kind][1]}", fontsize=9)
            if j == 0:
                ax.set_ylabel("share of total (%)")
            if i == len(models) - 1:
                ax.set_xlabel(LENGTH_LABELS[modality], fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLORS[c]) for c in ORDER]
    names = [LABELS.get(c, "unattributed (backward engine)") for c in ORDER]
    fig.legend(handles, names, loc="lower center", ncol=4, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, -0.01))
    extra = " (dashed: typical dataset length)" if typical else ""
    fig.suptitle(f"{modality}, {mode}: where the cost goes{extra}", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 0.97))
    return fig


def _share(frame, modality, model, kind, length, comps) -> float:
    d = frame[(frame.modality == modality) & (frame.model == model) & (frame.kind == kind)
              & (frame["mode"] == "inference") & (frame.length == length)]
    return float(100 * d[d.component.isin(comps)].share.sum()) if len(d) else float("nan")


def headline_numbers(frame: pd.DataFrame, largest: pd.DataFrame, near: pd.DataFrame,
                     checks: pd.DataFrame) -> dict:
    """Numbers the prose cites (keys without the 'cb_' prefix)."""
    out: dict = {}
    if frame.empty:
        return out
    for mod, base in BASELINES.items():
        sub = near[(near.modality == mod) & (near.model == base)] if len(near) else near
        if sub.empty:
            continue
        length = float(sub.length.iloc[0])
        out[f"{mod}_length"] = length
        for kind in ("time", "flops"):
            out[f"{mod}_core_{kind}"] = _share(frame, mod, base, kind, length, ["attention_core"])
            out[f"{mod}_attn_{kind}"] = _share(frame, mod, base, kind, length, list(ATTENTION_ALL))
            out[f"{mod}_ffn_{kind}"] = _share(frame, mod, base, kind, length, ["feed_forward"])
            out[f"{mod}_input_{kind}"] = _share(frame, mod, base, kind, length, ["input"])
        if len(largest):
            row = largest[(largest.modality == mod) & (largest.model == base) & (largest.kind == "time")
                          & (largest["mode"] == "inference") & (largest.attention == "all attention")]
            if len(row):
                out[f"{mod}_attn_largest_time"] = row.label.iloc[0]
    # the claim: non-attention parts carry most of the cost at typical lengths (keys always
    # defined: the prose cites them even when no model was measured at a typical length)
    for kind in ("time", "flops"):
        out.update({f"models_{kind}": 0, f"holds_{kind}": 0, f"fails_{kind}": "none"})
    if len(near):
        inf = near[(near["mode"] == "inference") & near.kind.isin(["time", "flops"])]
        attn = (inf[inf.component.isin(ATTENTION_ALL)].groupby(["modality", "model", "kind"]).share.sum()
                .unstack("kind"))
        for kind in ("time", "flops"):
            if kind in attn:
                holds = attn[kind] < 0.5
                out[f"models_{kind}"] = int(attn[kind].notna().sum())
                out[f"holds_{kind}"] = int(holds.sum())
                fails = [f"{m} ({100 * v:.0f}%)" for (_, m), v in attn[kind][~holds].items()]
                out[f"fails_{kind}"] = ", ".join(fails) if fails else "none"
                out[f"nonattn_{kind}_min"] = float(100 * (1 - attn[kind].max()))
    if len(checks):
        out["residual_abs_max"] = float(checks["residual %"].abs().max())
        out["residual_abs_median"] = float(checks["residual %"].abs().median())
        out["within_10"] = int((checks["residual %"].abs() <= 10).sum())
        out["points"] = int(len(checks))
        out["overhead_median"] = float(checks["hook overhead %"].median())
    return out


def disagreement(frame: pd.DataFrame) -> pd.DataFrame:
    """Per point: attention share of latency vs of FLOPs (percentage points apart)."""
    d = frame[frame.kind.isin(["time", "flops"]) & frame.component.isin(ATTENTION_ALL)]
    if d.empty:
        return d
    w = d.groupby(["modality", "model", "mode", "length", "kind"]).share.sum().unstack("kind") * 100
    w = w.rename(columns={"time": "attention % of time", "flops": "attention % of FLOPs"})
    if {"attention % of time", "attention % of FLOPs"} <= set(w.columns):
        w["difference (pp)"] = w["attention % of time"] - w["attention % of FLOPs"]
    return w.reset_index()


__all__ = ["plot_shares", "headline_numbers", "disagreement", "COLORS"]
