"""Attention operators in isolation: how latency, memory and FLOPs of each variant grow with T.

The attention core alone (no projections, no feed-forward), so the asymptotics are visible
before the full models of the tipping-point study blur them. A unit is one (mode, length): every
variant is measured there, their calls alternating (``effx.profiling.paired``). The variants and
their facts (options, keys per query, analytic FLOPs) come from ``effx.attention.ATTENTION``.
"""
from __future__ import annotations

import statistics

import pandas as pd
import torch

from effx import params as p
from effx.attention import ATTENTION
from effx.device import resolve_dtype
from effx.errors import Unsupported
from effx.profiling.flops import count_flops
from effx.profiling.memory import peak_memory_bytes
from effx.profiling.paired import time_alternating, warm_up
from effx.profiling.point import make_step
from effx.results import metric
from effx.runner.local import is_oom
from effx.study import Record, Study, Unit

MODES = ("inference", "training")
METRICS = ("latency", "memory", "flops")

PARAMETERS = {
    "variants": p.choices(*ATTENTION, default=list(ATTENTION), doc="attention variants"),
    "lengths": p.positive_ints("sequence lengths T (tokens)", maximum=1 << 20,
                               default=[256, 512, 1024, 2048, 4096]),
    "batch": p.positive_int("batch size B", default=1),
    "heads": p.positive_int("attention heads H", default=12),
    "head_dim": p.positive_int("head dimension D", default=64),
    "window": p.positive_int("sliding window: keys on each side of a query", default=128),
    "block": p.positive_int("block size of the block-sparse band layout", default=64),
    "landmarks": p.positive_int("Nystrom landmarks", default=64),
    "modes": p.choices(*MODES, default=["inference", "training"]),
    "metrics": p.choices(*METRICS, default=list(METRICS)),
    "device": p.device(),
    "dtype": p.dtype(),
    "repeats": p.positive_int("alternating timed rounds per point", default=10),
    "warmup": p.positive_int("untimed warm-up calls per variant and point", default=2),
    "threads": p.positive_int("CPU threads used by torch while timing", default=2),
    "budget_s": p.positive_number("a variant whose warm-up call takes longer than this (s) is "
                                  "not timed at this length or longer ones", default=2.0),
}


def options(variant: str, P: dict) -> dict:
    """The variant's options under these parameters (the spec fills in the rest)."""
    return {"sliding_window": {"window": P["window"]}, "block_sparse": {"block": P["block"]},
            "nystrom": {"num_landmarks": P["landmarks"]}}.get(variant, {})


def units(P: dict) -> list[Unit]:
    return [Unit(dict(mode=m, length=t, batch=P["batch"], heads=P["heads"],
                      head_dim=P["head_dim"], device=P["device"], dtype=P["dtype"],
                      variants={v: ATTENTION[v].label(**options(v, P)) for v in P["variants"]}),
                 f"{m} at T={t}", series=m, cost_s=t * (3 if m == "training" else 1) / 512,
                 gpus=int(P["device"] != "cpu"), cpus=P["threads"])
            for m in P["modes"] for t in P["lengths"]]


def execute(unit: Unit, P: dict, ctx) -> list[Record]:
    k = unit.key
    t, dev = k["length"], torch.device(k["device"])
    dtype = resolve_dtype(k["dtype"], dev)
    shape = (k["batch"], k["heads"], t, k["head_dim"])
    training = k["mode"] == "training"
    gen = torch.Generator().manual_seed(0)
    q, kk, v = (torch.randn(shape, generator=gen).to(dev, dtype).requires_grad_(training)
                for _ in range(3))
    records, steps, inner = {}, {}, {}
    for name in P["variants"]:
        spec, opts = ATTENTION[name], options(name, P)
        point = dict(variant=name, option=spec.label(**opts), mode=k["mode"], device=k["device"],
                     dtype=k["dtype"], batch=k["batch"], heads=k["heads"], head_dim=k["head_dim"],
                     length=t)
        stopped = [r for r in ctx.earlier if r["point"].get("variant") == name
                   and r["point"]["length"] < t and r.get("info", {}).get("stopped_by_budget_s")]
        try:
            if name == "nystrom" and t < P["landmarks"]:
                raise Unsupported(f"T={t} < landmarks={P['landmarks']}")
            call = spec.call_options(t, **opts)
            step = make_step(lambda fn=spec.fn, call=call: fn(q, kk, v, **call), k["mode"])
            m = {}
            if "memory" in P["metrics"]:
                m["peak_memory_bytes"] = metric(peak_memory_bytes(step, dev), "bytes")
            if "flops" in P["metrics"]:
                m["flops"] = metric(count_flops(step)[0], "FLOP")
        except Unsupported as exc:
            records[name] = Record(point, "unsupported", info={"reason": str(exc)})
            continue
        except Exception as exc:  # noqa: BLE001 - an OOM of one variant is its result
            if not is_oom(exc):
                raise
            records[name] = Record(point, "oom", info={"error": str(exc).splitlines()[0][:300]})
            continue
        info = {"keys_per_query": spec.keys_per_query(t, **opts),
                "analytic_flops_forward": spec.flops(k["batch"], k["heads"], t, k["head_dim"], **opts)}
        records[name] = Record(point, "ok", m, info)
        if "latency" not in P["metrics"]:
            continue
        if stopped:
            info.update(stopped_by_budget_s=P["budget_s"], timing="stopped at a shorter length")
            continue
        one, inner[name] = warm_up(step, device=dev, warmup=P["warmup"])
        if one > P["budget_s"]:
            info.update(stopped_by_budget_s=P["budget_s"], timing=f"one call took {one:.2f} s")
            continue
        steps[name] = step
    if steps:
        for name, s in time_alternating(steps, device=dev, repeats=P["repeats"], inner=inner).items():
            records[name].metrics["latency_s"] = metric(statistics.median(s), "s", s)
    return list(records.values())


def table(store, P: dict) -> pd.DataFrame:
    """The store's tidy table restricted to the variants and lengths of ``P``."""
    t = store.table()
    if t.empty or "variant" not in t:
        return t
    return t[t.variant.isin(P["variants"]) & t.length.isin(P["lengths"])]


def not_measured(store, P: dict) -> pd.DataFrame:
    """Points not measured (out of memory, unsupported) or not timed (the time budget), and why."""
    rows = []
    for rec in store.records():
        pt, info = rec["point"], rec.get("info", {})
        if pt.get("length") not in P["lengths"] or pt.get("mode") not in P["modes"]:
            continue
        if rec["status"] == "ok" and not info.get("timing"):
            continue
        why = info.get("timing") or info.get("reason") or info.get("cause") or info.get("error")
        rows.append({"variant": pt.get("variant", "all (the unit's worker)"), "mode": pt["mode"],
                     "length": pt["length"], "status": rec["status"], "why": why})
    return pd.DataFrame(rows, columns=["variant", "mode", "length", "status", "why"])


def headline_numbers(table: pd.DataFrame) -> dict[str, float]:
    """Ratios at the longest length where sdpa, eager and sliding_window were all timed."""
    ok = table[(table.status == "ok") & (table["mode"] == "inference")]
    wide = ok.pivot_table(index=["length", "variant"], columns="metric", values="value").reset_index()
    if "latency_s" not in wide:
        return {"max_length": float("nan")}
    have = wide.dropna(subset=["latency_s"]).groupby("length").variant.apply(set)
    lengths = [t for t, vs in have.items() if {"sdpa", "eager", "sliding_window"} <= vs]
    if not lengths:
        return {"max_length": float("nan")}
    at = wide[wide.length == max(lengths)].set_index("variant")
    out = {"max_length": float(max(lengths)),
           "eager_over_sdpa_latency": at.latency_s["eager"] / at.latency_s["sdpa"],
           "sliding_over_sdpa_latency": at.latency_s["sliding_window"] / at.latency_s["sdpa"]}
    if "peak_memory_bytes" in at:
        out["eager_over_sdpa_memory"] = at.peak_memory_bytes["eager"] / max(at.peak_memory_bytes["sdpa"], 1.0)
    if "flops" in at:
        out["sliding_over_sdpa_flops"] = at.flops["sliding_window"] / at.flops["sdpa"]
        # how far the sliding window's time ratio is from its work ratio (1 = as fast per FLOP)
        out["sliding_time_over_work"] = out["sliding_over_sdpa_latency"] / out["sliding_over_sdpa_flops"]
    return out


STUDY = Study(name="attention_scaling", title="Attention operators in isolation",
              part="Foundations", position=10, parameters=PARAMETERS, units=units,
              execute=execute, gpu_priority=1, share_s=140)
