"""Analysis of the cost breakdown: shares per component, the checks, where attention takes over,
and the numbers the chapter cites (computed here, glued there, never typed)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from effx.analysis.tipping import crossing_length
from effx.models import builders
from effx.models.components import ATTENTION_ALL, ATTENTION_CORE, LABELS
from effx.profiling.component_checks import SCATTER_LIMIT, check_verdict

UNATTRIBUTED, OVERHEAD = "unattributed", "overhead"
BANDS = (UNATTRIBUTED, OVERHEAD)         # parts of the time that belong to no component
KINDS = {"time": ("time_s", "latency"), "flops": ("flops", "FLOPs (counted)"),
         "memory": ("saved_bytes", "saved activations")}
KEYS = ["modality", "model", "mode", "device", "batch", "length"]
BASELINES = {"text": "bert", "speech": "hubert", "vision": "vit", "controlled": "dense_sdpa",
             "controlled_vision": "vit_dense"}


def component_frame(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (point, kind, component): value and share. Time shares are of the plain
    (un-instrumented) step, so the overhead band and unattributed operator time show as bands of
    their own; FLOPs and memory shares are of their counted totals."""
    if table.empty:
        return pd.DataFrame()
    ok = table[(table.status == "ok") & table.metric.notna()]
    rows = ok[ok.metric.str.match(r"^(time_s|flops|saved_bytes)/")].copy()
    if rows.empty:
        return pd.DataFrame()
    rows[["prefix", "component"]] = rows.metric.str.split("/", n=1, expand=True)
    rows["kind"] = rows.prefix.map({v[0]: k for k, v in KINDS.items()})
    plain = ok[ok.metric == "latency_s"].set_index(KEYS).value
    total = rows.groupby(KEYS + ["kind"]).value.transform("sum")
    by_plain = rows.set_index(KEYS).index.map(plain.to_dict().get)
    rows["share"] = np.where(rows.kind == "time", rows.value / np.asarray(by_plain, dtype=float),
                             rows.value / total)
    return rows[KEYS + ["kind", "component", "value", "share"]].reset_index(drop=True)


def _attention_share(g: pd.DataFrame, definition) -> tuple[float, float]:
    """(attention share, largest share of any other component) in one point's rows."""
    attn = g[g.component.isin(definition)].share.sum()
    rest = g[~g.component.isin(definition) & ~g.component.isin(BANDS)].share
    return float(attn), float(rest.max()) if len(rest) else 0.0


def attention_largest(frame: pd.DataFrame) -> pd.DataFrame:
    """Per model, mode, kind and definition of attention: from which length attention's share is,
    and stays, larger than any other single component's (``effx.analysis.crossing_length``)."""
    rows = []
    if frame.empty:
        return pd.DataFrame()
    for key, g in frame[frame.kind.isin(["time", "flops"])].groupby(
            ["modality", "model", "mode", "device", "kind"], sort=False):
        for label, definition in (("core", ATTENTION_CORE), ("all attention", ATTENTION_ALL)):
            pts = [(L, *_attention_share(gl, definition)) for L, gl in g.groupby("length")]
            lengths, attn, rest = (np.array(x, dtype=float) for x in zip(*pts))
            tpoint = crossing_length(lengths, attn, rest)    # "cheaper" = rest < attention
            unit = builders.MODALITIES[key[0]].unit
            text = (f"not largest up to {lengths.max():g} {unit}" if tpoint.status == "not_cheaper"
                    else tpoint.label(unit))
            rows.append(dict(zip(["modality", "model", "mode", "device", "kind"], key),
                             attention=label, status=tpoint.status, length=tpoint.length,
                             label=text, max_share=float(attn.max())))
    return pd.DataFrame(rows)


def nearest_lengths(frame: pd.DataFrame, typical: dict[str, float]) -> pd.DataFrame:
    """Shares at the measured length nearest (in log) to each modality's typical length."""
    out = []
    for mod, target in typical.items():
        sub = frame[(frame.modality == mod) & (frame["mode"] == "inference")] if len(frame) else frame
        if sub.empty:
            continue
        lengths = np.array(sorted(sub.length.unique()), dtype=float)
        near = lengths[np.argmin(np.abs(np.log(lengths / target)))]
        out.append(sub[sub.length == near].assign(typical=target))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def typical_table(near: pd.DataFrame) -> pd.DataFrame:
    """One row per (modality, model, kind) at the typical length: shares in %, largest component."""
    if near.empty:
        return near
    rows = []
    for key, g in near.groupby(["modality", "model", "kind", "length"], sort=False):
        share = g.set_index("component").share
        big = share.drop(list(BANDS), errors="ignore").idxmax()
        rows.append(dict(zip(["modality", "model", "cost", "length"], key),
                         **{"attention core %": 100 * share.get("attention_core", 0),
                            "all attention %": 100 * share.reindex(list(ATTENTION_ALL)).fillna(0).sum(),
                            "feed-forward %": 100 * share.get("feed_forward", 0),
                            "input stage %": 100 * share.get("input", 0),
                            "overhead %": 100 * share.get(OVERHEAD, np.nan),
                            "largest": LABELS.get(big, big)}))
    return pd.DataFrame(rows)


def _points_with(table: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per point that measured ``metric``, one column per metric; the points' info
    columns), both indexed by KEYS; empty frames when no point did."""
    ok = table[(table.status == "ok") & table.metric.notna()]
    wide = ok.pivot_table(index=KEYS, columns="metric", values="value", aggfunc="first")
    if metric not in wide:
        return pd.DataFrame(), pd.DataFrame()
    wide = wide[wide[metric].notna()]
    return wide, ok.drop_duplicates(KEYS).set_index(KEYS)


def checks(table: pd.DataFrame) -> pd.DataFrame:
    """Per timed point: plain step, operator time, overhead band, the sum check (medians of the
    components + overhead vs the plain step), and the checks that can fail: operator time within
    the plain step, and the ablation's attention share against the profiled one (the core's
    operators, and the time between them in the modules the ablation replaces)."""
    wide, info = _points_with(table, "operator_s")
    if wide.empty:
        return pd.DataFrame()
    comps = [c for c in wide.columns if c.startswith("time_s/")]
    out = pd.DataFrame({"plain ms": 1e3 * wide.latency_s, "operators ms": 1e3 * wide.operator_s,
                        "overhead %": 100 * wide["time_s/overhead"] / wide.latency_s})
    out["sum of medians / plain"] = wide[comps].sum(axis=1) / wide.latency_s
    out["within 10%"] = (out["sum of medians / plain"] - 1).abs() <= 0.10
    out["operators within plain"] = [_check_outcome(info, i, "operators_within_plain")
                                     for i in wide.index]
    if "ablation_share" in wide:
        out["ablation share %"] = 100 * wide.ablation_share
        out["profiled core %"] = 100 * wide.profiled_core_share
        out["ablation agrees"] = [_check_outcome(info, i, "ablation_matches_profile")
                                  for i in wide.index]
    return out.reset_index()


def _check_outcome(info: pd.DataFrame, point, check: str) -> str | None:
    """'pass', 'fail' or 'too scattered' (``check_verdict``); None: not run at that point.
    Records from before the third outcome have only ``passed``: the rule is applied again."""
    column = f"info_check/{check}"
    c = info.loc[point, column] if column in info else None
    if not isinstance(c, dict):
        return None
    if "verdict" in c:
        return c["verdict"]
    lo, hi = c["interval"]
    return check_verdict(lo, hi, misses=not c["passed"])["verdict"]


PARTS = {"core_operators": "core operators", "core_between_ops": "between core operators",
         "other_components": "other components", "rest": "rest"}


def ablation_parts(table: pd.DataFrame) -> pd.DataFrame:
    """Per point with an ablation: what removing the attention core saved (% of the plain
    step), and how the profiled steps with and without it split the saving (medians over rounds
    of the paired differences, % of the plain step; 95% interval of the other components'
    part): the core's operators, the time between them (blank where not measured), the other
    components' operators, and the rest (time outside operators elsewhere)."""
    wide, info = _points_with(table, "ablation_parts/core_operators")
    if wide.empty:
        return pd.DataFrame()
    out = pd.DataFrame({"plain ms": 1e3 * wide.latency_s, "saved %": 100 * wide.ablation_share})
    for part, label in PARTS.items():
        column = f"ablation_parts/{part}"
        out[f"{label} %"] = 100 * wide[column] / wide.latency_s if column in wide else np.nan
    bounds = info.reindex(wide.index).get("info_ablation_parts_interval/other_components")
    if bounds is not None:
        out["other components 95% (%)"] = [
            f"[{100 * b[0] / p:.1f}, {100 * b[1] / p:.1f}]" if isinstance(b, list) else ""
            for b, p in zip(bounds, wide.latency_s)]
    return out.reset_index()


def flops_check(table: pd.DataFrame) -> pd.DataFrame:
    """Analytic vs counted forward FLOPs per component, where a closed form exists."""
    ok = table[(table.status == "ok") & table.metric.notna() & (table["mode"] == "inference")]
    an = ok[ok.metric.str.startswith("analytic_flops/")].copy()
    if an.empty:
        return an
    an["component"] = an.metric.str.split("/").str[1]
    cnt = ok[ok.metric.str.startswith("flops/")].assign(component=lambda d: d.metric.str.split("/").str[1])
    keys = ["modality", "model", "length", "component"]
    merged = an[keys + ["value"]].merge(cnt[keys + ["value"]], on=keys, suffixes=("_analytic", "_counted"))
    merged["counted / analytic"] = merged.value_counted / merged.value_analytic.replace(0, np.nan)
    return merged


def _share(frame, modality, model, kind, length, comps) -> float:
    d = frame[(frame.modality == modality) & (frame.model == model) & (frame.kind == kind)
              & (frame["mode"] == "inference") & (frame.length == length)]
    return float(100 * d[d.component.isin(comps)].share.sum()) if len(d) else float("nan")


def headline(frame: pd.DataFrame, largest: pd.DataFrame, near: pd.DataFrame,
             check: pd.DataFrame) -> dict:
    """Every number the chapter's prose cites (keys without the 'cb_' prefix)."""
    out: dict = {"points": 0, "sum_within_10": 0, "operators_ok": 0, "operators_fail": "none",
                 "operators_scattered": "none", "overhead_median": float("nan"),
                 "ablation_points": 0, "ablation_agrees": 0, "ablation_misses": "none",
                 "ablation_scattered": "none", "scatter_limit_points": 100 * SCATTER_LIMIT}
    for kind in ("time", "flops"):
        out.update({f"models_{kind}": 0, f"holds_{kind}": 0, f"fails_{kind}": "none"})
    if frame.empty:
        return out
    for mod, base in BASELINES.items():
        sub = near[(near.modality == mod) & (near.model == base)] if len(near) else near
        if sub.empty:
            continue
        length = float(sub.length.iloc[0])
        out[f"{mod}_model"], out[f"{mod}_length"] = base, length
        for kind in ("time", "flops"):
            for name, comps in (("core", ["attention_core"]), ("attn", list(ATTENTION_ALL)),
                                ("ffn", ["feed_forward"]), ("input", ["input"]),
                                ("overhead", [OVERHEAD])):
                out[f"{mod}_{name}_{kind}"] = _share(frame, mod, base, kind, length, comps)
        row = largest[(largest.modality == mod) & (largest.model == base) & (largest.kind == "time")
                      & (largest["mode"] == "inference") & (largest.attention == "all attention")] \
            if len(largest) else largest
        out[f"{mod}_attn_largest_time"] = row.label.iloc[0] if len(row) else "n/a"
    if len(near):
        inf = near[(near["mode"] == "inference") & near.kind.isin(["time", "flops"])]
        attn = (inf[inf.component.isin(ATTENTION_ALL)].groupby(["modality", "model", "kind"]).share
                .sum().unstack("kind"))
        for kind in ("time", "flops"):
            if kind in attn:
                holds = attn[kind] < 0.5
                out[f"models_{kind}"] = int(attn[kind].notna().sum())
                out[f"holds_{kind}"] = int(holds.sum())
                fails = [f"{m} ({100 * v:.0f}%)" for (_, m), v in attn[kind][~holds].items()]
                out[f"fails_{kind}"] = ", ".join(fails) if fails else "none"
    if len(check):
        def points(rows) -> str:
            return ", ".join(f"{r.model} {r['mode']} {r.length:g}"
                             for _, r in rows.iterrows()) or "none"
        ops = check["operators within plain"]
        out["points"] = int(len(check))
        out["sum_within_10"] = int(check["within 10%"].sum())
        out["operators_ok"] = int((ops == "pass").sum())
        out["operators_fail"] = points(check[ops == "fail"])
        out["operators_scattered"] = points(check[ops == "too scattered"])
        out["overhead_median"] = float(check["overhead %"].median())
        if "ablation agrees" in check:
            agrees = check["ablation agrees"]
            out["ablation_points"] = int(agrees.notna().sum())
            out["ablation_agrees"] = int((agrees == "pass").sum())
            out["ablation_misses"] = points(check[agrees == "fail"])
            out["ablation_scattered"] = points(check[agrees == "too scattered"])
    return out


def contrasts(near: pd.DataFrame) -> str:
    """The chapter's comparisons at typical lengths, as sentences computed from the shares:
    each efficient model's attention (core + projections) share of time against its share of
    FLOPs and against its baseline's share of time."""
    if near.empty:
        return "Nothing was measured at a typical length."
    inf = near[(near["mode"] == "inference") & near.kind.isin(["time", "flops"])]
    attn = (inf[inf.component.isin(ATTENTION_ALL)].groupby(["modality", "model", "kind"]).share
            .sum().unstack("kind") * 100)
    lines = []
    for (mod, model), r in attn.iterrows():
        base = BASELINES.get(mod)
        if "time" not in r or "flops" not in r or pd.isna(r.time):
            continue
        word = "more" if r.time > r.flops else "less"
        text = (f"- **{model}** ({mod}): attention takes {r.time:.1f}% of the time and "
                f"{r.flops:.1f}% of the FLOPs ({word} of the time than of the work)")
        if model != base and (mod, base) in attn.index and pd.notna(attn.loc[(mod, base), "time"]):
            b = attn.loc[(mod, base), "time"]
            text += (f"; its baseline {base} spends {b:.1f}% of its time in attention, so the "
                     f"efficient model spends {'more' if r.time > b else 'less'} of its time there")
        lines.append(text + ".")
    return "\n".join(lines) if lines else "Nothing was timed at a typical length."
