"""Figures of the SPION chapter: learned layouts per layer, the switch rule over training, and
the loss curves of every method."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def layouts(store, task: str, method: str = "spion_cf", seed: int | None = None):
    """Each layer's learned block layout (dark = computed block)."""
    for rec in store.records():
        pt = rec["point"]
        if pt.get("task") == task and pt.get("method") == method and (seed is None or pt["seed"] == seed):
            maps = [np.array(x, dtype=float) for x in rec["info"].get("layouts", []) if x is not None]
            if not maps:
                return None
            fig, axes = plt.subplots(1, len(maps), figsize=(2.6 * len(maps), 2.8), squeeze=False)
            for i, (ax, lay) in enumerate(zip(axes[0], maps)):
                ax.imshow(lay, cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
                ax.set_title(f"layer {i}: {lay.mean():.0%} of blocks", fontsize=9)
                ax.set_xlabel("key block")
                if i == 0:
                    ax.set_ylabel("query block")
            fig.suptitle(f"{task}: {method} layouts (seed {pt['seed']})", fontsize=10)
            fig.tight_layout()
            return fig
    return None


def switch(curve, threshold: float, task: str):
    """Relative change of the map distance per layer at each capture; the rule's threshold."""
    if curve.empty:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    for (seed, layer), g in curve.groupby(["seed", "layer"]):
        ax.plot(g.step, g["relative change"], marker="o", ms=3, label=f"layer {layer}")
    ax.axhline(threshold, ls="--", c="grey", label=f"threshold {threshold:.0%}")
    at = curve["switched at"].dropna()
    if len(at):
        ax.axvline(at.iloc[0], c="k", lw=1, label="switch")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("|d_t - d_(t-1)| / d_(t-1)")
    ax.set_title(f"{task}: the dense-to-sparse rule", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def losses(store, task: str, window: int = 10):
    """Training loss (running mean) of every method of a task; the sparse phase dashed."""
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    drawn = False
    for rec in store.records():
        pt, hist = rec["point"], rec.get("info", {}).get("history")
        if pt.get("task") != task or not hist:
            continue
        loss = np.convolve(hist["loss"], np.ones(window) / window, mode="valid")
        ax.plot(np.arange(len(loss)) + window - 1, loss, label=f"{pt['method']} (seed {pt['seed']})")
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("training step")
    ax.set_ylabel(f"loss (mean of {window})")
    ax.set_title(f"{task}: training loss", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig
