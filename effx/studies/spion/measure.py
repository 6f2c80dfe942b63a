"""One SPION study unit: a training run (``effx.spion.train``), then its learned layouts' attention
timed alone against dense attention, alternating (``effx.profiling.paired``)."""
from __future__ import annotations

import hashlib
import statistics
from pathlib import Path

import torch

from effx.attention import ATTENTION
from effx.errors import ParameterError
from effx.profiling.paired import time_alternating, warm_up
from effx.results import metric
from effx.spion.baselines import matched_density
from effx.spion.train import SpionRunConfig, SpionRun
from effx.study import Record

HEAD_DIM, HEADS = 32, 2          # the LRA model's attention (dim 64, 2 heads)


def config(key: dict, P: dict, density: float | None) -> SpionRunConfig:
    spion = key["method"].startswith("spion")
    return SpionRunConfig(
        task=key["task"], length=key["length"], n_train=key["n_train"], n_test=key["n_test"],
        method=key["method"], block=key["block"], filter_size=P["filter_size"],
        quantile=P["quantile"], density=density, softmax=P["softmax"], backend=P["backend"],
        switch_rule=P["switch_rule"] if spion else "distance", capture_every=P["capture_every"],
        threshold=P["threshold"],
        switch_step=(max(1, int(P["switch_fraction"] * key["steps"]))
                     if spion and P["switch_rule"] == "fixed" else None),
        steps=key["steps"], batch_size=key["batch_size"], lr=key["lr"], warmup=key["warmup"],
        seed=key["seed"], device=key["device"], threads=P["threads"] if key["device"] == "cpu" else None,
        checkpoint_every=max(10, key["steps"] // 10))


def _density(key: dict, P: dict, earlier: list[dict]) -> float | None:
    if key["method"] == "spion_c":
        return P["c_density"]
    if key["method"] not in ("sliding_window", "bigbird"):
        return None
    spion = [r for r in earlier if r["point"].get("method") == "spion_cf" and r["status"] == "ok"]
    if not spion:
        raise ParameterError("methods", P["methods"], "'spion_cf' too: the fixed patterns are "
                             "given its learned density", why=f"no SPION-CF run for {key['task']}")
    return matched_density(spion[-1]["info"])


def attention_alone(layouts, length: int, block: int, softmax: str, repeats: int, device) -> dict:
    """Seconds of one attention call (forward + backward, batch 32) with each layer's layout,
    against dense SDPA at the same shape, in paired rounds."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(32, HEADS, length, HEAD_DIM, generator=g).to(device).requires_grad_(True)
               for _ in range(3))
    spec, dense = ATTENTION["block_sparse"], ATTENTION["sdpa"]

    def step(fn, **kw):
        def run():
            fn(q, k, v, **kw).sum().backward()
        return run
    steps = {"dense": step(dense.fn)}
    for i, layout in enumerate(layouts):
        steps[f"layer{i}"] = step(spec.fn, layout=torch.tensor(layout, device=device), block=block,
                                  softmax=softmax)
    inner = {n: warm_up(s, device=device)[1] for n, s in steps.items()}
    samples = time_alternating(steps, device=device, repeats=repeats, inner=inner)
    return {n: s for n, s in samples.items()}


def run_unit(unit, P: dict, ctx) -> list[Record]:
    key = unit.key
    cfg = config(key, P, _density(key, P, ctx.earlier))
    name = hashlib.sha1(cfg.key().encode()).hexdigest()[:16]
    ckpt = Path(ctx.checkpoint_dir) / f"spion-{name}.pt" if ctx.checkpoint_dir else None
    if ckpt is not None:
        ckpt.parent.mkdir(parents=True, exist_ok=True)
    rec = SpionRun(cfg, checkpoint=ckpt, log=ctx.log).run()
    m = {"test_accuracy": metric(rec["test_accuracy"], "fraction"),
         "mean_density": metric(rec["mean_density"], "fraction"),
         "attention_flops_forward": metric(rec["attention_flops_forward"]["total"]
                                           if isinstance(rec["attention_flops_forward"], dict)
                                           else rec["attention_flops_forward"], "FLOP")}
    for phase in ("dense", "sparse"):
        sec = rec["seconds_per_step"].get(phase)
        if sec is not None:
            m[f"seconds_per_step/{phase}"] = metric(sec, "s")
        mem = rec["peak_memory_bytes"].get(phase)
        if mem is not None:
            m[f"peak_memory/{phase}"] = metric(mem, "bytes")
    info = {k: rec[k] for k in ("switched_at", "captures", "layouts", "layout_density",
                                "mean_density", "attention_flops_forward")}
    info["config"] = rec["config"]
    info["history"] = {k: rec["history"][k] for k in ("loss", "seconds", "phase", "capture")}
    if any(layout is not None for layout in rec["layouts"]):
        ctx.log(f"{unit.label}: timing its attention alone against dense")
        layouts = [layout for layout in rec["layouts"] if layout is not None]
        samples = attention_alone(layouts, key["length"], key["block"], P["softmax"],
                                  P["timing_repeats"], key["device"])
        for n, s in samples.items():
            m[f"attention_s/{n}"] = metric(statistics.median(s), "s", s)
    if ckpt is not None and ckpt.exists():
        ckpt.unlink()                 # the run is recorded: its checkpoint has served
    return [Record(key, "ok", m, info)]
