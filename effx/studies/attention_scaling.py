"""Attention operators in isolation: how latency, memory and FLOPs of each variant grow with T.

The first vertical slice of the pipeline (package -> notebook -> results store -> book): the
attention core alone, no projections or feed-forward, so the asymptotics are visible before the
full models of the tipping-point study blur them.
"""
from __future__ import annotations

import math

import pandas as pd
import torch

from effx import params as p
from effx.attention import ATTENTION
from effx.attention.block_sparse import band_layout
from effx.device import resolve_dtype
from effx.profiling import Unsupported, make_step, measure_step
from effx.profiling.point import METRICS, MODES

PARAMETERS = {
    "variants": p.choices(*ATTENTION, doc="attention variants to measure"),
    "lengths": p.positive_ints("sequence lengths T (tokens)", maximum=1 << 20),
    "batch": p.positive_int("batch size B"),
    "heads": p.positive_int("attention heads H"),
    "head_dim": p.positive_int("head dimension D"),
    "window": p.positive_int("sliding window: keys on each side of a query"),
    "block": p.positive_int("block size of the block-sparse band layout"),
    "landmarks": p.positive_int("Nystrom landmarks"),
    "modes": p.choices(*MODES, doc="inference and/or training (forward + backward)"),
    "metrics": p.choices(*METRICS, doc="what to measure per point"),
    "device": p.device(),
    "dtype": p.dtype("float32", "bfloat16", "float16"),
    "repeats": p.positive_int("timed repeats per point (median reported)"),
    "warmup": p.positive_int("untimed warm-up calls per point"),
    "threads": p.positive_int("CPU threads used by torch while timing"),
    "budget_s": p.positive_number("a series stops growing T once one point takes longer (s)"),
}


def variant_options(variant: str, P: dict, t: int) -> dict:
    """Options of the attention function for this variant at length t."""
    if variant == "sliding_window":
        return {"window": P["window"]}
    if variant == "block_sparse":
        return {"block": P["block"], "layout": band_layout(math.ceil(t / P["block"]), 1)}
    if variant == "nystrom":
        return {"num_landmarks": P["landmarks"]}
    return {}


def keys_per_query(variant: str, P: dict, t: int) -> float:
    """Keys each query really attends to (for analytic FLOPs)."""
    if variant == "sliding_window":
        w = min(P["window"], t - 1)
        i = torch.arange(t)
        return float(((i + w).clamp(max=t - 1) - (i - w).clamp(min=0) + 1).float().mean())
    if variant == "block_sparse":
        return float(min(3 * P["block"], t))
    if variant == "nystrom":
        return float(3 * min(P["landmarks"], t))        # F, A and B products, each ~T*m
    return float(t)


def option_label(variant: str, P: dict) -> str:
    """The variant's defining option, part of the point key (a new window is a new point)."""
    return {"sliding_window": f"window={P['window']}", "block_sparse": f"block={P['block']},band=1",
            "nystrom": f"landmarks={P['landmarks']}"}.get(variant, "")


def points(P: dict) -> list[dict]:
    return [dict(variant=v, option=option_label(v, P), mode=m, device=P["device"], dtype=P["dtype"],
                 batch=P["batch"], heads=P["heads"], head_dim=P["head_dim"], length=t)
            for v in P["variants"] for m in P["modes"] for t in P["lengths"]]


def measure(point: dict, P: dict):
    dev, t = torch.device(point["device"]), point["length"]
    dtype = resolve_dtype(point["dtype"], dev)
    if point["variant"] == "nystrom" and t < P["landmarks"]:
        raise Unsupported(f"T={t} < landmarks={P['landmarks']}")
    shape = (point["batch"], point["heads"], t, point["head_dim"])
    training = point["mode"] == "training"
    q, k, v = (torch.randn(shape, device=dev, dtype=dtype, requires_grad=training) for _ in range(3))
    fn, opts = ATTENTION[point["variant"]], variant_options(point["variant"], P, t)
    step = make_step(lambda: fn(q, k, v, **opts), point["mode"])
    metrics = measure_step(step, device=dev, repeats=P["repeats"], warmup=P["warmup"],
                           metrics=P["metrics"])
    kpq = keys_per_query(point["variant"], P, t)
    analytic = 4.0 * point["batch"] * point["heads"] * t * kpq * point["head_dim"]
    info = {"keys_per_query": kpq, "analytic_flops_forward": analytic}
    return metrics, info


def tidy(df: pd.DataFrame) -> pd.DataFrame:
    """Rows that measured something, with readable units added."""
    ok = df[df["status"] == "ok"].copy()
    ok["value_readable"] = ok["value"]
    ok.loc[ok.metric == "latency_s", "value_readable"] = ok["value"] * 1e3
    ok.loc[ok.metric == "peak_memory_bytes", "value_readable"] = ok["value"] / 2**20
    ok.loc[ok.metric == "flops", "value_readable"] = ok["value"] / 1e9
    return ok


READABLE = {"latency_s": "latency (ms)", "peak_memory_bytes": "peak memory (MiB)",
            "flops": "FLOPs (GFLOP, counted)"}


def headline_numbers(ok: pd.DataFrame) -> dict[str, float]:
    """Ratios at the longest length where sdpa, eager and sliding_window were all measured."""
    inf = ok[ok["mode"] == "inference"]
    wide = inf.pivot_table(index=["length", "variant"], columns="metric", values="value").reset_index()
    have = wide.groupby("length").variant.apply(set)
    lengths = [t for t, vs in have.items() if {"sdpa", "eager", "sliding_window"} <= vs]
    if not lengths:
        return {"max_length": float("nan")}
    t = max(lengths)
    at = wide[wide.length == t].set_index("variant")
    out = {"max_length": float(t)}
    if "latency_s" in at:
        out["eager_over_sdpa_latency"] = at.latency_s["eager"] / at.latency_s["sdpa"]
        out["sliding_over_sdpa_latency"] = at.latency_s["sliding_window"] / at.latency_s["sdpa"]
    if "peak_memory_bytes" in at:
        out["eager_over_sdpa_memory"] = at.peak_memory_bytes["eager"] / max(at.peak_memory_bytes["sdpa"], 1.0)
    return out

