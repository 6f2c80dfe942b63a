"""Where the time goes: cost per Transformer component versus input length (Diwan et al., ACL 2023).

"When to Use Efficient Self Attention?" finds that the non-attention parts of a Transformer
(embeddings, feed-forward, and for speech the convolutional waveform encoder) carry a large share
of its cost at the lengths real data have. For every model of the tipping-point study
(``effx.studies.tipping_points``: same labels, modalities and model builds) and each input length,
this study measures latency, FLOPs and saved activation memory per component
(``effx.models.components``), attributed module by module (``effx.profiling.components``), and
asks at which length attention becomes the largest component.

Two definitions of "attention": the *core* alone (scores, softmax, weighted sum, or the efficient
variant's equivalent), and core + Q/K/V and output projections (*all attention*).
"""
from __future__ import annotations

import statistics
import time

import numpy as np
import pandas as pd

from effx import params as p
from effx.device import resolve_dtype
from effx.errors import ParameterError
from effx.models.components import (ATTENTION_ALL, ATTENTION_CORE, COMPONENTS, LABELS, assign,
                                    family_of)
from effx.models.encoder import EncoderConfig, encoder_flops
from effx.results import metric
from effx.studies import tipping_points as tp

MODALITIES = tp.MODALITIES
KINDS = {"time": ("time_s", "latency"), "flops": ("flops", "FLOPs (counted)"),
         "memory": ("saved_bytes", "saved activations")}
UNATTRIBUTED = "unattributed"       # backward engine between nodes, the loss: time only

def _optional_mapping(item: p.Param, doc: str) -> p.Param:
    inner = p.mapping_of(item, MODALITIES)
    return p.Param(lambda name, value: {} if value == {} else inner.check(name, value), doc)


PARAMETERS = {
    # the tipping-point study's checks, so both accept exactly the same models and lengths
    "modalities": tp.PARAMETERS["modalities"],
    "models": tp.PARAMETERS["models"],
    "lengths": p.Param(tp.PARAMETERS["lengths"].check,
                       "inference lengths per modality: tokens, seconds (speech), image side px"),
    "training_lengths": _optional_mapping(p.positive_numbers(),
                                          "lengths measured in training mode (forward + backward) "
                                          "per modality; {} = inference only"),
    "batch": p.positive_int("batch size"),
    "size": p.choice("base", "tiny", doc="paper-scale models, or tiny ones for smoke runs"),
    "controlled_layers": p.positive_int("depth of effx's controlled encoder (BERT-base widths)"),
    "lhubert_window": p.positive_int("L-HuBERT window: frames (20 ms) on each side"),
    "device": p.device(),
    "dtype": p.dtype("float32", "bfloat16", "float16"),
    "repeats": p.positive_int("plain/instrumented step pairs per point (after one warm-up pass)"),
    "threads": p.positive_int("CPU threads for torch while timing"),
    "budget_s": p.positive_number("a series stops growing once one point takes longer than this (s)"),
}


def cross_check(P: dict) -> dict:
    P = tp.cross_check(P)
    for mod, lengths in P["training_lengths"].items():
        if mod not in P["modalities"]:
            raise ParameterError("training_lengths", P["training_lengths"],
                                 f"keys among the modalities {P['modalities']}", why=f"{mod!r} is not profiled")
        if mod != "speech":
            if any(float(x) != int(x) for x in lengths):
                raise ParameterError(f"training_lengths[{mod!r}]", lengths, "whole numbers")
            P["training_lengths"][mod] = [int(x) for x in lengths]
    return P


def points(P: dict) -> list[dict]:
    out = []
    for mod in P["modalities"]:
        for model in P["models"][mod]:
            for mode, lengths in (("inference", P["lengths"][mod]),
                                  ("training", P["training_lengths"].get(mod, []))):
                out += [dict(modality=mod, model=model, mode=mode, device=P["device"], dtype=P["dtype"],
                             batch=P["batch"], size=P["size"], length=length,
                             option=tp.option_label(mod, model, P)) for length in lengths]
    return out


def measure(point: dict, P: dict):
    from effx.profiling.components import profile_components
    dtype = resolve_dtype(point["dtype"], point["device"])
    model = tp._model(point["modality"], point["model"], point["size"], point["device"],
                      point["dtype"], point["option"], P["lhubert_window"])
    inputs, info = tp._inputs(point, model, dtype)
    cpu0 = time.process_time()
    r = profile_components(model, lambda: model(**inputs), assign, mode=point["mode"],
                           device=point["device"], repeats=P["repeats"])
    comps = list(COMPONENTS) + [UNATTRIBUTED]
    zero = [0.0] * P["repeats"]
    times = {c: r["time_s"].get(c, zero) for c in comps}
    med = {c: statistics.median(times[c]) for c in comps}
    plain = statistics.median(r["plain_s"])
    m = {"latency_s": metric(plain, "s", r["plain_s"]),
         "instrumented_s": metric(statistics.median(r["instrumented_s"]), "s", r["instrumented_s"]),
         "residual_s": metric(plain - sum(med.values()), "s"),
         "flops": metric(r["flops_total"], "FLOP"),
         "saved_bytes": metric(sum(r["saved_bytes"].values()), "bytes")}
    for c in comps:
        m[f"time_s/{c}"] = metric(med[c], "s", times[c])
        if point["mode"] == "training":
            m[f"backward_s/{c}"] = metric(statistics.median(r["backward_s"].get(c, zero)), "s")
    for c in COMPONENTS:
        m[f"flops/{c}"] = metric(r["flops"].get(c, 0), "FLOP")
        m[f"saved_bytes/{c}"] = metric(r["saved_bytes"].get(c, 0), "bytes")
    if point["mode"] == "inference":
        for c, v in (analytic_flops(point, model, info) or {}).items():
            m[f"analytic_flops/{c}"] = metric(v, "FLOP")
    info = {k: v for k, v in info.items() if isinstance(v, (int, float, str, bool))}
    info.update(family=family_of(model), hook_overhead_us=round(r["hook_overhead_s"] * 1e6, 2),
                module_calls=r["module_calls"], graph_nodes=r["graph_nodes"],
                measure_cpu_s=round(time.process_time() - cpu0, 2))   # CPU seconds, all threads
    return m, info


def analytic_flops(point: dict, model, info: dict) -> dict[str, float] | None:
    """Forward FLOPs per component from the model's sizes (2 per multiply-add), for the dense models
    with a closed form (effx dense encoder, BERT, ViT, HuBERT); None otherwise. Counts what
    FlopCounterMode counts: matmuls, convolutions, attention (not norms, softmax, activations)."""
    b, name = point["batch"], point["model"].split(":")[0]
    if point["modality"] == "controlled":
        if model.cfg.attention not in ("sdpa", "eager"):
            return None
        return dict(encoder_flops(model.cfg, b, info["sequence_length"]), input=0, other=0)
    c = getattr(model, "config", None)
    if name in ("bert", "vit"):
        cfg = EncoderConfig(d_model=c.hidden_size, n_heads=c.num_attention_heads,
                            n_layers=c.num_hidden_layers, d_ff=c.intermediate_size)
        t, d = info["sequence_length"], c.hidden_size
        patch = 2 * b * (t - 1) * d * c.num_channels * c.patch_size ** 2 if name == "vit" else 0
        return dict(encoder_flops(cfg, b, t), input=patch, other=2 * b * d * d)   # pooler: [CLS]
    if name == "hubert":
        layers = model.encoder.transformer.layers
        attn = layers[0].attention
        d, t = attn.embed_dim, info["sequence_length"]
        cfg = EncoderConfig(d_model=d, n_heads=attn.num_heads, n_layers=len(layers),
                            d_ff=layers[0].feed_forward.intermediate_dense.out_features)
        n, cnn = info["samples"], 0
        for block in model.feature_extractor.conv_layers:
            conv = block.conv
            n = (n - conv.kernel_size[0]) // conv.stride[0] + 1
            cnn += 2 * b * n * conv.out_channels * conv.in_channels * conv.kernel_size[0]
        proj = model.encoder.feature_projection.projection
        pos = model.encoder.transformer.pos_conv_embed.conv
        out_len = t + 2 * pos.padding[0] - pos.kernel_size[0] + 1
        pos_flops = 2 * b * out_len * pos.out_channels * (pos.in_channels // pos.groups) * pos.kernel_size[0]
        return dict(encoder_flops(cfg, b, t), input=cnn + 2 * b * t * proj.in_features * d + pos_flops,
                    other=0)
    return None


# -- analysis ------------------------------------------------------------------------------------
def component_frame(table: pd.DataFrame) -> pd.DataFrame:
    """Long table: one row per (point, kind, component) with value and share of the kind's total.

    Time shares are of the sum of the components (the residual against the plain step is in
    ``sum_check``); FLOPs and memory shares of the counted totals.
    """
    if table.empty:
        return pd.DataFrame()
    ok = table[(table.status == "ok") & table.metric.notna()]
    rows = ok[ok.metric.str.contains("/") & ~ok.metric.str.startswith(("backward_s/", "analytic"))].copy()
    rows[["prefix", "component"]] = rows.metric.str.split("/", n=1, expand=True)
    rows["kind"] = rows.prefix.map({v[0]: k for k, v in KINDS.items()})
    keys = ["modality", "model", "mode", "device", "batch", "length", "kind"]
    rows["share"] = rows.value / rows.groupby(keys).value.transform("sum")
    return rows[keys + ["component", "value", "share"]].reset_index(drop=True)


def _attention_share(g: pd.DataFrame, definition: tuple[str, ...]) -> tuple[float, float]:
    """(attention share, largest share of any other component) in one point's rows."""
    attn = g[g.component.isin(definition)].share.sum()
    rest = g[~g.component.isin(definition) & (g.component != UNATTRIBUTED)].share
    return float(attn), float(rest.max()) if len(rest) else 0.0


def attention_largest(frame: pd.DataFrame) -> pd.DataFrame:
    """Per model, mode, device, kind and definition: from which length attention is (and stays)
    the largest component; interpolated on log length (``effx.studies.tipping.crossing_length``)."""
    from effx.studies.tipping import crossing_length
    rows = []
    if frame.empty:
        return pd.DataFrame()
    for key, g in frame[frame.kind.isin(["time", "flops"])].groupby(
            ["modality", "model", "mode", "device", "kind"], sort=False):
        for label, definition in (("core", ATTENTION_CORE), ("all attention", ATTENTION_ALL)):
            pts = [(L, *_attention_share(gl, definition)) for L, gl in g.groupby("length")]
            lengths, attn, rest = (np.array(x, dtype=float) for x in zip(*pts))
            tpoint = crossing_length(lengths, attn, rest)   # "cheaper" = rest <= attention
            unit = {"speech": "s", "vision": "px"}.get(key[0], "tokens")
            text = (f"not largest up to {lengths.max():g} {unit}" if tpoint.status == "no_crossing"
                    else tpoint.label(unit))
            rows.append(dict(zip(["modality", "model", "mode", "device", "kind"], key),
                             attention=label, status=tpoint.status, length=tpoint.length,
                             label=text, max_share=float(attn.max())))
    return pd.DataFrame(rows)


def nearest_lengths(frame: pd.DataFrame, typical: dict[str, float]) -> pd.DataFrame:
    """Shares at the measured length nearest (in log) to each modality's typical length."""
    out = []
    for mod, target in typical.items():
        sub = frame[(frame.modality == mod) & (frame["mode"] == "inference")]
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
        big = share.drop(UNATTRIBUTED, errors="ignore").idxmax()
        rows.append(dict(zip(["modality", "model", "kind", "length"], key),
                         **{"attention core %": 100 * share.get("attention_core", 0),
                            "all attention %": 100 * share.reindex(list(ATTENTION_ALL)).fillna(0).sum(),
                            "feed-forward %": 100 * share.get("feed_forward", 0),
                            "input stage %": 100 * share.get("input", 0),
                            "largest": LABELS.get(big, big)}))
    return pd.DataFrame(rows)


def sum_check(table: pd.DataFrame) -> pd.DataFrame:
    """Per point: plain step time, sum of components, residual and hook overhead in % of plain."""
    ok = table[table.status == "ok"]
    wide = ok.pivot_table(index=["modality", "model", "mode", "length"], columns="metric",
                          values="value", aggfunc="first")
    comps = [c for c in wide.columns if c.startswith("time_s/")]
    out = pd.DataFrame({"plain ms": 1e3 * wide.latency_s, "components ms": 1e3 * wide[comps].sum(axis=1)})
    out["residual %"] = 100 * wide.residual_s / wide.latency_s
    out["hook overhead %"] = 100 * (wide.instrumented_s - wide.latency_s) / wide.latency_s
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

