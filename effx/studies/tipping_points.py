"""Tipping points (Diwan, Choi and Harwath, ACL 2023): the input length at which an efficient
attention variant becomes cheaper than its vanilla model, per metric, mode, modality and device.

Four "modalities": text (BERT vs Longformer, BigBird, Nystromformer), speech (HuBERT vs L-HuBERT),
vision (ViT vs Swin, PVTv2), all Hugging Face / torchaudio models built from configs with random
weights, and ``controlled``: effx's own encoder where only the attention function changes.
A model label ``name:eager`` is the same model with eager (matmul-softmax) dense attention
instead of PyTorch's fused SDPA: the 2023 baseline.
"""
from __future__ import annotations

import functools

import torch

from effx import params as p
from effx.device import resolve_dtype
from effx.errors import ParameterError
from effx.models.encoder import Encoder, EncoderConfig
from effx.models.zoo import ZOO, get_entry
from effx.profiling import make_step, measure_step
from effx.profiling.point import METRICS, MODES
from effx.results import metric

MODALITIES = ("text", "speech", "vision", "controlled")

#: the controlled comparison: effx encoder variants (attention name, options)
CONTROLLED = {
    "dense_sdpa": ("sdpa", {}),
    "dense_eager": ("eager", {}),
    "sliding_window": ("sliding_window", {"window": 256}),
    "block_sparse": ("block_sparse", {"block": 64, "band": 2}),
    "nystrom": ("nystrom", {"num_landmarks": 64}),
}
CONTROLLED_BASELINES = ("dense_sdpa", "dense_eager")


def model_labels(modality: str) -> list[str]:
    if modality == "controlled":
        return list(CONTROLLED)
    names = [n for n, e in ZOO.items() if e.modality == modality]
    baselines = [n for n in names if ZOO[n].baseline is None]
    return names + [f"{b}:eager" for b in baselines]


def baselines_of(modality: str, models: list[str]) -> list[tuple[str, str]]:
    """(efficient, baseline) pairs among `models`: each efficient model vs every baseline label."""
    if modality == "controlled":
        bases = [m for m in models if m in CONTROLLED_BASELINES]
        return [(m, b) for m in models if m not in CONTROLLED_BASELINES for b in bases]
    pairs = []
    for m in models:
        entry = ZOO[m.split(":")[0]]
        if entry.baseline is None:
            continue
        for b in (entry.baseline, f"{entry.baseline}:eager"):
            if b in models:
                pairs.append((m, b))
    return pairs


LENGTH_UNITS = {"text": "tokens", "speech": "seconds", "vision": "pixels", "controlled": "tokens"}
LENGTH_LABELS = {"text": "input length (tokens)", "speech": "audio length (seconds at 16 kHz)",
                 "vision": "image side (pixels)", "controlled": "input length (tokens)"}

_all_labels = sorted({m for mod in MODALITIES for m in model_labels(mod)})
PARAMETERS = {
    "modalities": p.choices(*MODALITIES, doc="which modalities to profile"),
    "models": p.mapping_of(p.choices(*_all_labels), MODALITIES,
                           doc="models per modality, e.g. {'text': ['bert', 'longformer']}; "
                               "'name:eager' = eager dense attention"),
    "lengths": p.mapping_of(p.positive_numbers(), MODALITIES,
                            doc="input lengths per modality: tokens, seconds (speech), image side in px"),
    "batch_sizes": p.positive_ints("batch sizes: latency/memory at each; throughput = batch / latency"),
    "modes": p.choices(*MODES),
    "metrics": p.choices(*METRICS),
    "size": p.choice("base", "tiny", doc="paper-scale models, or tiny ones for smoke runs"),
    "controlled_layers": p.positive_int("depth of effx's controlled encoder (BERT-base widths)"),
    "lhubert_window": p.positive_int("L-HuBERT window: frames (20 ms) on each side"),
    "device": p.device(),
    "dtype": p.dtype("float32", "bfloat16", "float16"),
    "repeats": p.positive_int("timed repeats per point"),
    "warmup": p.positive_int("untimed warm-up calls per point"),
    "threads": p.positive_int("CPU threads for torch while timing"),
    "budget_s": p.positive_number("a series stops growing once one point takes longer than this (s)"),
    "n_boot": p.positive_int("bootstrap resamples for tipping-point intervals"),
}


def cross_check(P: dict) -> dict:
    for mod in P["modalities"]:
        for name in ("models", "lengths"):
            if mod not in P[name]:
                raise ParameterError(name, P[name], f"a dict with an entry for every modality in {P['modalities']}",
                                     why=f"no entry for {mod!r}")
        allowed = model_labels(mod)
        bad = [m for m in P["models"][mod] if m not in allowed]
        if bad:
            raise ParameterError(f"models[{mod!r}]", bad[0], ", ".join(allowed))
        if mod != "speech" and any(float(x) != int(x) for x in P["lengths"][mod]):
            raise ParameterError(f"lengths[{mod!r}]", P["lengths"][mod], "whole numbers (tokens or pixels)")
        if mod != "speech":
            P["lengths"][mod] = [int(x) for x in P["lengths"][mod]]
    return P


def points(P: dict) -> list[dict]:
    out = []
    for mod in P["modalities"]:
        for model in P["models"][mod]:
            for mode in P["modes"]:
                for batch in P["batch_sizes"]:
                    for length in P["lengths"][mod]:
                        out.append(dict(modality=mod, model=model, mode=mode, device=P["device"],
                                        dtype=P["dtype"], batch=batch, size=P["size"], length=length,
                                        option=option_label(mod, model, P)))
    return out


def option_label(modality: str, model: str, P: dict) -> str:
    if modality == "controlled":
        return f"layers={P['controlled_layers']}"
    if model == "lhubert":
        return f"window={P['lhubert_window']}"
    return ""


@functools.lru_cache(maxsize=1)          # one model in memory at a time; sweeps go series by series
def _model(modality: str, label: str, size: str, device: str, dtype_name: str, option: str, window: int):
    dtype = resolve_dtype(dtype_name, device)
    if modality == "controlled":
        attention, opts = CONTROLLED[label]
        layers = int(option.split("=")[1])
        cfg = (EncoderConfig(n_layers=layers, attention=attention, attention_options=opts) if size == "base"
               else EncoderConfig(d_model=64, n_heads=4, n_layers=2, d_ff=128, vocab_size=1000,
                                  attention=attention, attention_options=opts))
        return Encoder(cfg).eval().to(device=device, dtype=dtype)
    name, _, attn = label.partition(":")
    overrides = {"window": window} if name == "lhubert" else {}
    model = get_entry(name).build(size=size, attn_implementation=attn or "sdpa", **overrides)
    return model.to(device=device, dtype=dtype)


def _inputs(point: dict, model, dtype):
    if point["modality"] == "controlled":
        t = int(point["length"])
        ids = torch.randint(0, model.cfg.vocab_size, (point["batch"], t), device=point["device"])
        return {"input_ids": ids}, {"attention_path": model.cfg.attention, "sequence_length": t,
                                    "padded_length": t}
    entry = get_entry(point["model"].split(":")[0])
    inputs = entry.make_inputs(model, batch=point["batch"], length=point["length"],
                               device=point["device"], dtype=dtype)
    return inputs, entry.describe(model, inputs)


def measure(point: dict, P: dict):
    dtype = resolve_dtype(point["dtype"], point["device"])
    model = _model(point["modality"], point["model"], point["size"], point["device"], point["dtype"],
                   point["option"], P["lhubert_window"])
    inputs, info = _inputs(point, model, dtype)
    training = point["mode"] == "training"
    if training:
        model.train(False)                       # dropout off: cost, not regularisation
        for v in inputs.values():
            if torch.is_tensor(v) and v.is_floating_point():
                v.requires_grad_(False)
    step = make_step(lambda: model(**inputs), point["mode"], module=model)
    metrics = measure_step(step, device=point["device"], repeats=P["repeats"], warmup=P["warmup"],
                           metrics=P["metrics"])
    if "latency_s" in metrics:
        samples = [point["batch"] / s for s in metrics["latency_s"]["samples"]]
        metrics["throughput_samples_per_s"] = metric(point["batch"] / metrics["latency_s"]["value"],
                                                     "samples/s", samples)
    return metrics, {k: v for k, v in info.items() if isinstance(v, (int, float, str, bool))}



# -- analysis ------------------------------------------------------------------------------------
COST_METRICS = ("latency_s", "peak_memory_bytes", "throughput_samples_per_s", "flops")


def tipping_points_table(store, P: dict, pts: list[dict]) -> "pd.DataFrame":
    """All tipping points of the current points: one row per (modality, pair, metric, mode, batch)."""
    import pandas as pd

    from effx.studies.tipping import tipping_table
    table = store.table(only=pts)
    if table.empty:
        return pd.DataFrame()
    samples = store.samples()
    rows = []
    for mod in P["modalities"]:
        sub = table[(table.modality == mod) & table.metric.isin(COST_METRICS)]
        for eff, base in baselines_of(mod, P["models"][mod]):
            pair = sub[sub.model.isin([eff, base])].drop(columns=["option"], errors="ignore")
            if pair.empty:
                continue
            tt = tipping_table(pair, {eff: base}, samples=samples, n_boot=P["n_boot"],
                               length_unit=LENGTH_UNITS[mod])
            rows.append(tt)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def plot_modality(table, tipping, typical, modality: str, mode: str, batch: int):
    """Cost curves per metric for one modality, tipping points and typical lengths marked."""
    import matplotlib.pyplot as plt

    from effx.plotting import UNIT_LABELS
    metrics = [m for m in COST_METRICS if m in set(table.metric)]
    data = table[(table.modality == modality) & (table["mode"] == mode) & (table.batch == batch)
                 & (table.status == "ok")]
    if data.empty or not metrics:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    models = list(dict.fromkeys(data.model))
    colors = dict(zip(models, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3))
    for ax, m in zip(axes[0], metrics):
        name, unit, scale = UNIT_LABELS[m]
        for model in models:
            d = data[(data.model == model) & (data.metric == m)].sort_values("length")
            if d.empty:
                continue
            style = "--" if model.endswith(":eager") or model == "dense_eager" else "-"
            ax.plot(d.length, d.value * scale, style, marker="o", ms=4, color=colors[model], label=model)
            if "q25" in d:
                ax.fill_between(d.length, d.q25 * scale, d.q75 * scale, color=colors[model], alpha=0.15, lw=0)
        if tipping is not None and len(tipping):
            tp = tipping[(tipping.modality == modality) & (tipping.metric == m) & (tipping["mode"] == mode)
                         & (tipping.batch == batch) & (tipping.status == "crossing")]
            for _, r in tp.iterrows():
                ax.axvline(r.tipping_length, color=colors.get(r.model, "k"), lw=1, alpha=0.8)
                if pd_notna(r.ci_low) and pd_notna(r.ci_high):
                    ax.axvspan(r.ci_low, r.ci_high, color=colors.get(r.model, "k"), alpha=0.08)
        if typical is not None and len(typical):
            for _, r in typical.iterrows():
                ax.axvspan(r["median"], r["p99"], color="0.5", alpha=0.12, lw=0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(LENGTH_LABELS[modality])
        ax.set_title(f"{name} ({unit})")
    axes[0][0].legend(fontsize=8, frameon=False)
    fig.suptitle(f"{modality}: {mode}, batch {batch}  (vertical lines: tipping points; grey: "
                 "typical dataset lengths, median to p99)", fontsize=10)
    fig.tight_layout()
    return fig


def pd_notna(x) -> bool:
    import pandas as pd
    return bool(pd.notna(x))


def typical_for(modality: str, typical) -> "pd.DataFrame":
    """One band of typical dataset lengths in the unit of the modality's x axis.

    Text: from the smallest median to the largest p99 over the GLUE dev sets. Speech: median to
    p99 of the real clips. Vision: the 224 px ImageNet convention.
    """
    import pandas as pd
    unit = {"text": "tokens", "controlled": "tokens", "speech": "seconds", "vision": "px (side)"}[modality]
    mod = "text" if modality == "controlled" else modality
    rows = typical[(typical.modality == mod) & (typical.unit == unit)]
    if mod == "vision":
        rows = rows[rows.dataset.str.contains("ImageNet")]
    if rows.empty:
        return rows
    return pd.DataFrame([{"modality": modality, "median": rows["median"].min(), "p99": rows["p99"].max(),
                          "datasets": ", ".join(rows.dataset)}])


def headline_numbers(tipping, bands: dict) -> dict:
    """Numbers the prose cites: how many pairs cross, where, and what fused attention does."""
    import numpy as np
    out = {"pairs": 0, "crossing": 0, "above_typical": 0, "below_typical": 0}
    if tipping is None or tipping.empty:
        return out
    lat = tipping[tipping.metric == "latency_s"]
    out["pairs"] = int(len(tipping))
    out["crossing"] = int((tipping.status == "crossing").sum())
    out["no_crossing"] = int((tipping.status == "no_crossing").sum())
    out["cheaper_everywhere"] = int((tipping.status == "cheaper_everywhere").sum())
    for _, r in tipping[tipping.status == "crossing"].iterrows():
        band = bands.get(r.modality)
        if band is not None:
            out["above_typical" if r.tipping_length > band else "below_typical"] += 1
    # fused vs eager baseline: latency tipping points of the same efficient model against both
    ratios, lost = [], 0
    for (mod, model, mode, batch), g in lat.groupby(["modality", "model", "mode", "batch"]):
        fused = g[~g.baseline.str.contains("eager")]
        eager = g[g.baseline.str.contains("eager")]
        if fused.empty or eager.empty:
            continue
        f, e = fused.iloc[0], eager.iloc[0]
        if f.status == "crossing" and e.status == "crossing":
            ratios.append(f.tipping_length / e.tipping_length)
        elif e.status in ("crossing", "cheaper_everywhere") and f.status == "no_crossing":
            lost += 1
    # text, not a float: the prose cites it, and "n/a" must read as such, not fail a float format
    out["fused_over_eager_tipping_median"] = (f"{float(np.median(ratios)):.2f}" if ratios
                                              else "n/a (no pair crosses against both)")
    out["fused_pairs_compared"] = len(ratios)
    out["crossings_lost_with_fused"] = lost
    return out

