"""Profiler: timing of a known cost, memory of a known allocation, FLOPs, sweeps with OOM and resume."""
import time

import torch

from effx.profiling import (count_flops, make_step, measure_step, peak_memory_bytes,
                            time_alternating, time_callable)
from effx.profiling.timing import fixed_threads, summarize


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


def test_alternating_rounds_rotate_the_order_and_pair_samples_by_round():
    calls = []
    steps = {name: (lambda n=name: calls.append(n)) for name in "ABC"}
    samples = time_alternating(steps, repeats=3)
    assert calls == list("ABC" + "BCA" + "CAB")              # each round starts one later
    assert all(len(s) == 3 for s in samples.values())
