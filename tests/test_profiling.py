"""Profiler: timing of a known cost, memory of a known allocation, FLOPs, sweeps with OOM and resume."""
import time

import pytest
import torch

from effx.profiling import count_flops, make_step, measure_step, peak_memory_bytes, run_sweep, time_callable
from effx.profiling.sweep import Unsupported
from effx.profiling.timing import fixed_threads, summarize
from effx.results import ResultStore, metric


def test_timing_a_known_sleep():
    samples = time_callable(lambda: time.sleep(0.02), repeats=5, warmup=1)
    assert len(samples) == 5
    assert 0.019 <= summarize(samples)["median"] < 0.03


def test_short_calls_are_batched_inside_a_sample():
    calls = []
    samples = time_callable(lambda: calls.append(1), repeats=3, warmup=0, min_sample_s=1e-3)
    assert len(samples) == 3 and len(calls) > 3 + 10       # many inner calls per sample
    assert all(s < 1e-4 for s in samples)                  # per-call time, not per-sample


def test_fixed_threads_restores():
    before = torch.get_num_threads()
    with fixed_threads(1) as n:
        assert n == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before


def test_peak_memory_of_a_known_allocation():
    n = 3 * 2**20                                               # 3 Mi floats = 12 MiB
    def step():
        a = torch.ones(n)
        b = a * 2                                             # two live at once: 24 MiB
        del a
        return b.sum()
    peak = peak_memory_bytes(step)
    assert 2 * 4 * n <= peak < 2 * 4 * n + 2**16
    weights = torch.ones(n)                                   # allocated before: not counted
    assert peak_memory_bytes(lambda: weights.sum()) < 2**16


def test_flops_count_fused_cpu_attention():
    q = torch.randn(2, 3, 64, 16)
    total, per_op = count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q))
    assert total == 4 * 2 * 3 * 64 * 64 * 16                  # 0 without our registration
    mm = torch.randn(8, 16)
    assert count_flops(lambda: mm @ mm.T)[0] == 2 * 8 * 16 * 8


def test_training_step_runs_backward_and_clears_grads():
    lin = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    step = make_step(lambda: lin(x), "training", module=lin)
    step()
    assert lin.weight.grad is None
    flops = measure_step(step, device="cpu", repeats=1, warmup=0, metrics=("flops",))["flops"]["value"]
    assert flops == 3 * 2 * 2 * 4 * 4 - 2 * 2 * 4 * 4        # fwd + grad_w (no grad for the input x)


def fake_oom(length):
    raise torch.OutOfMemoryError(f"CUDA out of memory at {length}")


def test_sweep_records_oom_and_skips_longer_points(tmp_path):
    store = ResultStore("sweep", "unit", root=tmp_path)
    store.start_run({}, "cpu")
    pts = [dict(model=m, length=t) for m in ("dense", "local") for t in (1, 2, 4, 8)]
    def measure(p):
        if p["model"] == "dense" and p["length"] >= 4:
            fake_oom(p["length"])
        return {"latency_s": metric(p["length"] * 1e-3, "s")}
    counts = run_sweep(store, pts, measure)
    status = {(r["point"]["model"], r["point"]["length"]): r["status"] for r in store.records()}
    assert status[("dense", 2)] == "ok" and status[("dense", 4)] == "oom"
    assert status[("dense", 8)] == "skipped_after_oom" and status[("local", 8)] == "ok"
    assert counts == {"measured": 6, "resumed": 0, "oom": 1, "skipped": 1, "unsupported": 0}


class Interrupted(BaseException):
    """Stands for Ctrl-C or a killed process (pytest reserves KeyboardInterrupt)."""


def test_interrupted_sweep_resumes_without_redoing(tmp_path):
    store = ResultStore("sweep", "unit", root=tmp_path)
    store.start_run({}, "cpu")
    pts = [dict(model="m", length=t) for t in (1, 2, 3, 4)]
    calls, interrupt = [], [True]
    def measure(p):
        if p["length"] == 3 and interrupt[0]:
            interrupt[0] = False
            raise Interrupted                              # the user stops the run here
        calls.append(p["length"])
        return {"x": metric(p["length"], "s")}
    with pytest.raises(Interrupted):
        run_sweep(store, pts, measure)
    assert [r["point"]["length"] for r in store.records()] == [1, 2]
    calls.clear()
    again = ResultStore("sweep", "unit", root=tmp_path)    # a new process
    again.start_run({}, "cpu")
    counts = run_sweep(again, pts, measure)
    assert calls == [3, 4] and counts["resumed"] == 2
    assert sorted(r["point"]["length"] for r in again.records()) == [1, 2, 3, 4]


def test_time_budget_stops_a_series_and_survives_resume(tmp_path):
    store = ResultStore("sweep", "unit", root=tmp_path)
    store.start_run({}, "cpu")
    pts = [dict(model="m", length=t) for t in (1, 2, 3)]
    def measure(p):                                        # one call's latency decides
        return {"latency_s": metric(0.05 if p["length"] == 2 else 0.01, "s")}
    run_sweep(store, pts, measure, budget_s=0.03)
    status = {r["point"]["length"]: r["status"] for r in store.records()}
    assert status == {1: "ok", 2: "ok", 3: "over_budget"}
    pts.append(dict(model="m", length=4))                   # a new, longer point in a new run
    again = ResultStore("sweep", "unit", root=tmp_path)
    again.start_run({}, "cpu")
    run_sweep(again, pts, measure, budget_s=0.03)
    assert {r["point"]["length"]: r["status"] for r in again.records()}[4] == "over_budget"


def test_unsupported_points_are_recorded_and_bugs_propagate(tmp_path):
    store = ResultStore("sweep", "unit", root=tmp_path)
    store.start_run({}, "cpu")
    def measure(p):
        if p["length"] == 1:
            raise Unsupported("side not a multiple of the patch")
        raise ValueError("a bug")
    with pytest.raises(ValueError, match="a bug"):
        run_sweep(store, [dict(length=1), dict(length=2)], measure)
    assert store.records()[0]["status"] == "unsupported"
