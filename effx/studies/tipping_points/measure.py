"""One unit of the tipping-point study: every model of a modality at one length, paired.

Per model: build, inputs, one step with peak memory, one with FLOPs counted (both deterministic),
then the warm-up; the models that may be timed are timed together, alternating
(``effx.profiling.paired``), ``repeats`` rounds. Throughput: samples/s at the largest batch of
``throughput_batches`` whose estimated activation memory (batch x the batch-1 peak) fits
``throughput_memory_gb``, again alternating among the models that reach that batch.

Time budget: a model whose warm-up call took longer than ``budget_s``, or that was stopped at a
shorter length of this series, is not timed here (its record says ``stopped_by_budget_s``);
memory and FLOPs are measured anyway. A larger budget later re-measures it (the runner's rule).
"""
from __future__ import annotations

import statistics

import torch

from effx.errors import Unsupported
from effx.models import builders
from effx.profiling.flops import count_flops
from effx.profiling.memory import peak_memory_bytes
from effx.profiling.paired import time_alternating, warm_up
from effx.profiling.point import make_step
from effx.results import metric
from effx.runner.local import is_oom
from effx.study import Record


def _prepare(step_inputs, model, mode):
    """A step for ``model`` on ``step_inputs`` (floating inputs never require grad)."""
    if mode == "training":
        model.train(False)                   # dropout off: cost, not regularisation
    return make_step(lambda: model(**step_inputs), mode, module=model)


def _stopped_before(label: str, length, earlier: list[dict]) -> tuple[str | None, float | None]:
    """(status to give, budget that stopped it) from this series' shorter lengths."""
    for rec in earlier:
        pt = rec["point"]
        if pt.get("model") != label or not pt["length"] < length:
            continue
        if rec["status"] in ("oom", "skipped_after_oom"):
            return "skipped_after_oom", None
        stopped = rec.get("info", {}).get("stopped_by_budget_s")
        if stopped is not None:
            return None, stopped
    return None, None


def measure_unit(unit, P: dict, ctx, get_model) -> list[Record]:
    from effx.studies.tipping_points import point_of
    k = unit.key
    mod, mode, length, device = k["modality"], k["mode"], k["length"], k["device"]
    records: dict[str, Record] = {}
    steps, inner, warm_s, models = {}, {}, {}, {}
    for label in P["models"][mod]:
        point = point_of(unit, label, P)
        skip, stopped_budget = _stopped_before(label, length, ctx.earlier)
        if skip:
            records[label] = Record(point, skip, info={"reason": "ran out of memory at a shorter "
                                                                 "length of this series"})
            continue
        try:
            model = get_model(mod, label, P)
            kwargs, info = builders.inputs(mod, label, model, k["batch"], length, device, P["dtype"])
            step = _prepare(kwargs, model, mode)
            metrics = {}
            if "memory" in P["metrics"]:
                metrics["peak_memory_bytes"] = metric(peak_memory_bytes(step, device), "bytes")
            if "flops" in P["metrics"]:
                metrics["flops"] = metric(count_flops(step)[0], "FLOP")
            if "memory" not in P["metrics"] and "flops" not in P["metrics"]:
                step()
            _, ran = builders.inputs(mod, label, model, k["batch"], length, device, P["dtype"])
            info.update({k2: v for k2, v in ran.items() if k2.endswith("observed")})
        except Unsupported as exc:
            records[label] = Record(point, "unsupported", info={"reason": str(exc)})
            continue
        except Exception as exc:  # noqa: BLE001 - an OOM of one model is its result
            if not is_oom(exc):
                raise
            records[label] = Record(point, "oom", info={"error": str(exc).splitlines()[0][:300]})
            continue
        info = {k2: v for k2, v in info.items() if isinstance(v, (int, float, str, bool))}
        records[label] = Record(point, "ok", metrics, info)
        models[label] = (model, kwargs)
        timed = "latency" in P["metrics"] or "throughput" in P["metrics"]
        if not timed:
            continue
        if stopped_budget is not None and stopped_budget >= P["budget_s"]:
            info["stopped_by_budget_s"] = P["budget_s"]
            info["timing"] = "stopped by the time budget at a shorter length"
            continue
        one, n_inner = warm_up(step, device=device, warmup=P["warmup"])
        info["warmup_call_s"] = round(one, 4)
        if one > P["budget_s"]:
            info["stopped_by_budget_s"] = P["budget_s"]
            info["timing"] = f"one call took {one:.2f} s > budget {P['budget_s']:g} s"
            continue
        steps[label], inner[label], warm_s[label] = step, n_inner, one
    if steps and "latency" in P["metrics"]:
        ctx.log(f"timing {', '.join(steps)}: {P['repeats']} alternating rounds")
        samples = time_alternating(steps, device=device, repeats=P["repeats"], inner=inner)
        for label, s in samples.items():
            records[label].metrics["latency_s"] = metric(statistics.median(s), "s", s)
            records[label].info["timing_order"] = list(steps)
    if steps and "throughput" in P["metrics"] and mode == "inference":
        _throughput(records, models, list(steps), warm_s, P, unit, ctx)
    return list(records.values())


def _throughput(records, models, labels, warm_s, P, unit, ctx) -> None:
    """samples/s at the largest batch that fits; batch 1 (the latency samples) when none does."""
    k = unit.key
    best = {label: k["batch"] for label in labels}
    for label in labels:
        lat = records[label].metrics.get("latency_s")
        if lat:
            records[label].metrics["throughput_samples_per_s"] = metric(
                k["batch"] / lat["value"], "samples/s", [k["batch"] / s for s in lat["samples"]])
    for batch in sorted(b for b in P["throughput_batches"] if b > k["batch"]):
        fits = []
        for label in labels:
            peak = records[label].metrics.get("peak_memory_bytes", {}).get("value")
            est = (peak or 0) * batch / k["batch"]
            if est > P["throughput_memory_gb"] * 2**30 or warm_s[label] * batch > P["budget_s"]:
                continue
            fits.append(label)
        if not fits:
            break
        steps, inner = {}, {}
        for label in fits:
            model, _ = models[label]
            try:
                kwargs, _ = builders.inputs(k["modality"], label, model, batch, k["length"],
                                            k["device"], P["dtype"])
            except Unsupported:
                continue
            steps[label] = _prepare(kwargs, model, "inference")
            _, inner[label] = warm_up(steps[label], device=k["device"], warmup=P["warmup"])
        ctx.log(f"throughput at batch {batch}: {', '.join(steps)}")
        samples = time_alternating(steps, device=k["device"], repeats=P["repeats"], inner=inner)
        for label, s in samples.items():
            tput = [batch / x for x in s]
            records[label].metrics["throughput_samples_per_s"] = metric(
                statistics.median(tput), "samples/s", tput)
            best[label] = batch
        del steps
        if k["device"] != "cpu":
            torch.cuda.empty_cache()
    for label in labels:
        records[label].info["throughput_batch"] = best[label]
