"""Figures of the cost-breakdown chapter (``effx.studies.cost_breakdown``).

``plot_shares`` draws, per modality, one row per model and one column per cost (latency, FLOPs,
saved activations): the share of each component, stacked, versus input length. Attention
components are drawn in reds, the rest in blues and greys, the overhead band (time no operator
accounts for) hatched, so "how much is attention" reads at a glance.
"""
from __future__ import annotations

import pandas as pd

from effx.models import builders
from effx.models.components import ATTENTION_ALL, LABELS
from effx.studies.cost_breakdown.analysis import KINDS, OVERHEAD, UNATTRIBUTED

COLORS = {"input": "#4d4d4d", "qkv_projection": "#f4a582", "attention_core": "#b2182b",
          "output_projection": "#d6604d", "feed_forward": "#2166ac", "norm_residual": "#92c5de",
          "other": "#bababa", UNATTRIBUTED: "#e0e0e0", OVERHEAD: "#fdfdfd"}
ORDER = ["attention_core", "qkv_projection", "output_projection", "feed_forward", "norm_residual",
         "input", "other", UNATTRIBUTED, OVERHEAD]
NAMES = {**LABELS, UNATTRIBUTED: "operators outside every module", OVERHEAD: "overhead (no operator)"}


def plot_shares(frame: pd.DataFrame, modality: str, mode: str, typical: float | None = None,
                kinds=("time", "flops", "memory")):
    """Stacked shares (%) of each component versus length; rows = models, columns = kinds."""
    import matplotlib.pyplot as plt
    data = frame[(frame.modality == modality) & (frame["mode"] == mode)]
    kinds = [k for k in kinds if k in set(data.kind) and data[data.kind == k].value.sum() > 0]
    models = list(dict.fromkeys(data.model))
    if data.empty or not kinds:
        return None
    fig, axes = plt.subplots(len(models), len(kinds), figsize=(3.3 * len(kinds), 2.3 * len(models) + 0.9),
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
                parts = ax.stackplot(x, ys, colors=[COLORS[c] for c in comps], linewidth=0.3,
                                     edgecolor="0.6")
                for c, part in zip(comps, parts):
                    if c == OVERHEAD:
                        part.set_hatch("///")
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
                ax.set_xlabel(builders.MODALITIES[modality].axis_label, fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor=COLORS[c], edgecolor="0.6",
                             hatch="///" if c == OVERHEAD else None) for c in ORDER]
    names = [NAMES[c] for c in ORDER]
    fig.legend(handles, names, loc="lower center", ncol=4, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, -0.01))
    extra = " (dashed: typical dataset length)" if typical else ""
    fig.suptitle(f"{modality}, {mode}: where the cost goes{extra}", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 0.97))
    return fig


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


__all__ = ["plot_shares", "disagreement", "COLORS"]
