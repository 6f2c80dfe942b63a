"""Every attention variant's analytic FLOPs (its spec) equal what FlopCounterMode counts.

Counted through ``effx.profiling.flops`` (PyTorch's FlopCounterMode plus CPU fused attention),
forward and backward, on odd sizes. The backward convention each spec states: 2x the forward when
autograd differentiates the two products (eager, block-sparse, Nystrom: every matmul gives two),
2.5x for fused kernels that recompute the scores (SDPA, sliding window on both of its paths).
The Triton path of the sliding window is counted the same way under the interpreter
(tests/kernel_checks/check_sliding_window.py, ``flops_counted_equal_spec``).
"""
import math

import pytest
import torch

from effx.attention import ATTENTION
from effx.attention import sliding_window as sw
from effx.attention.sliding_window_torch import _torch_forward
from effx.profiling.flops import count_flops


def random_layout(heads, nb, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(heads, nb, nb, generator=g) < 0.35) | torch.eye(nb, dtype=torch.bool)


# (variant, options, B, H, T, D): odd sizes; every registered variant at least once
CASES = [
    ("sdpa", {}, 2, 3, 63, 12),
    ("eager", {}, 2, 3, 63, 12),
    ("sliding_window", {"window": 5, "backend": "torch"}, 2, 3, 63, 12),
    ("sliding_window", {"window": 100, "backend": "torch"}, 1, 2, 37, 20),      # window covers T
    ("sliding_window", {"window": 0, "backend": "torch"}, 1, 2, 29, 8),
    ("sliding_window", {"window": 70, "backend": "torch"}, 2, 1, 301, 16),      # several chunks
    ("block_sparse", {"block": 16, "band": 1}, 2, 3, 63, 12),
    ("block_sparse", {"block": 7, "band": 2}, 1, 2, 100, 12),
    ("block_sparse", {"block": 7, "layout": random_layout(3, 15, 1)}, 2, 3, 100, 12),
    ("block_sparse", {"block": 16, "layout": random_layout(1, 4, 2)[0]}, 1, 2, 61, 20),
    ("nystrom", {"num_landmarks": 8}, 2, 3, 63, 12),
    ("nystrom", {"num_landmarks": 64, "pinv_iterations": 3}, 1, 2, 37, 16),   # m = min(64, T)
]


def case_id(case):
    name, opts, b, h, t, d = case
    shown = ",".join(f"{k}={'random' if torch.is_tensor(v) else v}" for k, v in opts.items() if k != "backend")
    return f"{name}[{shown}]-B{b}H{h}T{t}D{d}"


def test_every_registered_variant_has_a_case():
    assert {c[0] for c in CASES} == set(ATTENTION)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_counted_flops_equal_the_spec(case):
    name, opts, b, h, t, d = case
    spec = ATTENTION[name]
    g = torch.Generator().manual_seed(t)
    q, k, v = (torch.randn(b, h, t, d, generator=g).requires_grad_(True) for _ in range(3))
    kwargs = spec.call_options(t, **opts)
    outs = []
    forward, per_op = count_flops(lambda: outs.append(spec.fn(q, k, v, **kwargs)))
    backward, _ = count_flops(lambda: outs[0].backward(torch.ones_like(outs[0])))
    assert forward > 0, per_op
    assert forward == pytest.approx(spec.flops(b, h, t, d, **opts), rel=1e-12), per_op
    assert backward == pytest.approx(spec.backward_flops(b, h, t, d, **opts), rel=1e-12)
    assert backward == pytest.approx(spec.backward_factor * forward, rel=1e-12)


@pytest.mark.parametrize("case", [c for c in CASES if c[0] == "sliding_window"], ids=case_id)
def test_sliding_window_counts_the_band_and_reports_its_chunks_apart(case):
    """The torch path multiplies whole chunk spans: counting the ops *inside* its custom op gives
    ``computed_flops(path='torch')``; the op itself is counted as the band."""
    name, opts, b, h, t, d = case
    spec = ATTENTION[name]
    q, k, v = (torch.randn(b, h, t, d) for _ in range(3))
    w = min(opts["window"], t - 1)
    inner, per_op = count_flops(lambda: _torch_forward(q, k, v, w, d ** -0.5, None))
    assert inner == pytest.approx(spec.computed_flops(b, h, t, d, path="torch", **opts), rel=1e-12), per_op
    band = spec.flops(b, h, t, d, **opts)
    assert band == 4 * b * h * d * sw.band_pairs(t, w)
    assert spec.computed_flops(b, h, t, d, path="torch", **opts) >= band


@pytest.mark.parametrize("t, window", [(1, 0), (2, 5), (63, 5), (64, 0), (100, 99), (301, 70)])
def test_band_pairs_count_the_mask(t, window):
    assert sw.band_pairs(t, window) == int(ATTENTION["sliding_window"].mask(t, window=window).sum())


def test_a_custom_op_counts_once_with_padding_and_in_the_encoder():
    """Key padding does not change the counted FLOPs (padded keys are computed, then masked)."""
    spec = ATTENTION["sliding_window"]
    q, k, v = (torch.randn(2, 2, 50, 8) for _ in range(3))
    kpm = torch.ones(2, 50, dtype=torch.bool)
    kpm[1, 30:] = False
    counted, per_op = count_flops(lambda: spec.fn(q, k, v, window=6, key_padding_mask=kpm))
    assert list(per_op) == ["effx.sliding_window_forward"]
    assert counted == spec.flops(2, 2, 50, 8, window=6)
    assert math.isclose(spec.keys_per_query(50, window=6), sw.band_pairs(50, 6) / 50)
