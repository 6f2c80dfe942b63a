"""Plot helpers shared by the notebooks: one style, labelled axes with units, log-log scaling."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

UNIT_LABELS = {
    "latency_s": ("latency", "ms", 1e3),
    "peak_memory_bytes": ("peak memory", "MiB", 1 / 2**20),
    "flops": ("FLOPs (counted)", "GFLOP", 1e-9),
    "throughput_samples_per_s": ("throughput", "samples/s", 1.0),
}


def setup() -> None:
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 110, "savefig.bbox": "tight", "axes.titleweight": "bold"})


def scaled(df: pd.DataFrame) -> pd.DataFrame:
    """Add `shown` (value in display units) and `metric_label` columns."""
    out = df.copy()
    out["shown"] = [v * UNIT_LABELS.get(m, (m, "", 1.0))[2] for m, v in zip(out.metric, out.value)]
    out["metric_label"] = [f"{UNIT_LABELS[m][0]} ({UNIT_LABELS[m][1]})" if m in UNIT_LABELS else m
                           for m in out.metric]
    return out


def metric_grid(df: pd.DataFrame, *, x: str, x_label: str, hue: str, style: str | None = None,
                row: str | None = None, title: str | None = None, errorbars: bool = True,
                col_wrap: int | None = 2):
    """One panel per metric, ``col_wrap`` a row (legible at page width), log-log axes; IQR bands
    from q25/q75 when present."""
    data = scaled(df)
    g = sns.relplot(data=data, x=x, y="shown", hue=hue, style=style, col="metric_label", row=row,
                    col_wrap=None if row else col_wrap, kind="line", marker="o", markersize=5,
                    height=3.3, aspect=1.25, facet_kws={"sharey": False}, errorbar=None)
    if errorbars and {"q25", "q75"} <= set(data.columns):
        for (row_val, col_val), ax in g.axes_dict.items() if row else ((( None, k), v) for k, v in g.axes_dict.items()):
            sub = data[data.metric_label == col_val]
            if row:
                sub = sub[sub[row] == row_val]
            for _, grp in sub.dropna(subset=["q25"]).groupby([hue] + ([style] if style else [])):
                scale = UNIT_LABELS.get(grp.metric.iloc[0], ("", "", 1.0))[2]
                grp = grp.sort_values(x)
                ax.fill_between(grp[x], grp.q25 * scale, grp.q75 * scale, alpha=0.2, linewidth=0)
    g.set(xscale="log", yscale="log")
    g.set_axis_labels(x_label, "")
    g.set_titles(col_template="{col_name}", row_template="{row_name}")
    if title:
        g.figure.suptitle(title, y=1.03)
    return g
