"""Figures of the tipping-point chapter: cost curves per modality, two panels a row."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from effx.models import builders
from effx.plotting import UNIT_LABELS
from effx.studies.tipping_points.analysis import COSTS


def cost_curves(data: pd.DataFrame, tip: pd.DataFrame, band, modality: str, mode: str):
    """Median cost per length of every model (inter-quartile band of the repeats), determined
    tipping points as vertical lines (shaded: their interval), typical lengths in grey."""
    d = data[(data.modality == modality) & (data["mode"] == mode) & (data.status == "ok")]
    metrics = [m for m in COSTS if m in set(d.metric)]
    if d.empty or not metrics:
        return None
    cols = 2
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(9.5, 3.4 * rows), squeeze=False)
    models = list(dict.fromkeys(d.model))
    colors = dict(zip(models, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3))
    for ax, metric in zip(axes.flat, metrics):
        name, unit, scale = UNIT_LABELS[metric]
        for model in models:
            g = d[(d.model == model) & (d.metric == metric)]
            if g.empty:
                continue
            pooled = g.groupby("length").samples.sum().sort_index()   # all runs' repeats
            med = pooled.map(np.median) * scale
            q1, q3 = pooled.map(lambda s: np.quantile(s, 0.25)), pooled.map(lambda s: np.quantile(s, 0.75))
            style = "--" if model.endswith(":eager") or model == "dense_eager" else "-"
            ax.plot(med.index, med.values, style, marker="o", ms=4, color=colors[model], label=model)
            ax.fill_between(med.index, q1 * scale, q3 * scale, color=colors[model], alpha=0.15, lw=0)
        if len(tip):
            crossing = tip[(tip.modality == modality) & (tip.metric == metric) & (tip["mode"] == mode)
                           & (tip.status == "crossing")]
            for _, r in crossing.iterrows():
                ax.axvline(r.tipping_length, color=colors.get(r.model, "k"), lw=1, alpha=0.8)
                if pd.notna(r.ci_low) and pd.notna(r.ci_high) and np.isfinite(r.ci_high):
                    ax.axvspan(r.ci_low, r.ci_high, color=colors.get(r.model, "k"), alpha=0.08)
        if band is not None:
            ax.axvspan(band[0], band[1], color="0.5", alpha=0.12, lw=0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(builders.MODALITIES[modality].axis_label)
        ax.set_title(f"{name} ({unit})", fontsize=10)
    for ax in axes.flat[len(metrics):]:
        ax.axis("off")
    axes[0][0].legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig
