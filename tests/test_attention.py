"""Every attention variant against the one dense reference, with odd sizes and invariances."""
import math

import pytest
import torch

from effx.attention import ATTENTION, attention_reference, band_layout
from effx.attention.reference import block_layout_mask, sliding_window_mask


def qkv(b=2, h=3, t=63, d=12, dtype=torch.float32, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, t, d, generator=g, dtype=dtype).requires_grad_(grad) for _ in range(3)]


def padding_mask(b, t, cut):
    kpm = torch.ones(b, t, dtype=torch.bool)
    kpm[-1, t - cut:] = False
    return kpm


@pytest.mark.parametrize("name", ["sdpa", "eager"])
def test_dense_variants_equal_reference(name):
    q, k, v = qkv()
    kpm = padding_mask(2, 63, 10)
    out = ATTENTION[name](q, k, v, key_padding_mask=kpm)
    ref = attention_reference(q, k, v, key_padding_mask=kpm)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("t, window", [(63, 5), (100, 1), (17, 40), (64, 0), (1, 3)], ids=lambda x: str(x))
def test_sliding_window_equals_reference_band(t, window):
    q, k, v = qkv(t=t)
    kpm = padding_mask(2, t, min(t - 1, 7))
    out = ATTENTION["sliding_window"](q, k, v, window=window, key_padding_mask=kpm, backend="torch")
    ref = attention_reference(q, k, v, mask=sliding_window_mask(t, window), key_padding_mask=kpm)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_window_covering_the_sequence_is_dense():
    q, k, v = qkv(t=50)
    out = ATTENTION["sliding_window"](q, k, v, window=10_000, backend="torch")
    torch.testing.assert_close(out, attention_reference(q, k, v), atol=1e-5, rtol=1e-5)


def test_sliding_window_gradients_match_reference():
    q, k, v = qkv(t=37, d=8, dtype=torch.float64, grad=True)
    ATTENTION["sliding_window"](q, k, v, window=4, backend="torch").square().sum().backward()
    grads = [x.grad.clone() for x in (q, k, v)]
    for x in (q, k, v):
        x.grad = None
    attention_reference(q, k, v, mask=sliding_window_mask(37, 4)).square().sum().backward()
    for g, x in zip(grads, (q, k, v)):
        torch.testing.assert_close(g, x.grad)


@pytest.mark.parametrize("t, block", [(63, 16), (128, 32), (100, 7)])
def test_block_sparse_equals_reference(t, block):
    nb = math.ceil(t / block)
    layout = (torch.rand(3, nb, nb, generator=torch.Generator().manual_seed(t)) < 0.4) | torch.eye(nb, dtype=torch.bool)
    q, k, v = qkv(t=t)
    kpm = padding_mask(2, t, 5)
    out = ATTENTION["block_sparse"](q, k, v, layout=layout, block=block, key_padding_mask=kpm)
    ref = attention_reference(q, k, v, mask=block_layout_mask(layout, block, t)[None], key_padding_mask=kpm)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_block_sparse_all_ones_layout_is_dense():
    q, k, v = qkv(t=70)
    out = ATTENTION["block_sparse"](q, k, v, layout=torch.ones(5, 5, dtype=torch.bool), block=16)
    torch.testing.assert_close(out, attention_reference(q, k, v), atol=1e-5, rtol=1e-5)


def test_band_layout():
    lay = band_layout(4, 1)
    assert lay.tolist() == [[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 1, 1]]


def test_nystrom_with_every_token_a_landmark_converges_to_dense():
    q, k, v = qkv(b=1, h=2, t=24, d=8, dtype=torch.float64)
    out = ATTENTION["nystrom"](q, k, v, num_landmarks=24, pinv_iterations=40)
    torch.testing.assert_close(out, attention_reference(q, k, v), atol=1e-6, rtol=1e-6)


def test_nystrom_approximates_dense_reasonably():
    q, k, v = qkv(b=1, h=2, t=256, d=16, seed=3)
    q, k = q * 0.3, k * 0.3                       # smooth attention: low-rank, easy to approximate
    out = ATTENTION["nystrom"](q, k, v, num_landmarks=32)
    ref = attention_reference(q, k, v)
    rel = (out - ref).norm() / ref.norm()
    assert rel < 0.2


@pytest.mark.parametrize("name, opts", [("sdpa", {}), ("eager", {}), ("sliding_window", {"window": 4}),
                                        ("block_sparse", {"block": 8})])
def test_padding_never_changes_real_tokens(name, opts):
    q, k, v = qkv(b=1, t=40)
    t_pad = 56
    pad = [torch.cat([x, torch.randn(1, 3, t_pad - 40, 12)], dim=2) for x in (q, k, v)]
    kpm = torch.zeros(1, t_pad, dtype=torch.bool)
    kpm[:, :40] = True
    def call(a, b, c, t, mask):
        o = dict(opts)
        if name == "block_sparse":
            o["layout"] = band_layout(math.ceil(t / 8), 1)
        return ATTENTION[name](a, b, c, key_padding_mask=mask, **o)
    base = call(q, k, v, 40, torch.ones(1, 40, dtype=torch.bool))
    padded = call(*pad, t_pad, kpm)[:, :, :40]
    if name == "block_sparse":   # the band reaches further on the padded grid: compare with its reference
        lay = band_layout(math.ceil(t_pad / 8), 1)
        ref = attention_reference(*pad, mask=block_layout_mask(lay, 8, t_pad), key_padding_mask=kpm)[:, :, :40]
        torch.testing.assert_close(padded, ref, atol=1e-5, rtol=1e-5)
    else:
        torch.testing.assert_close(padded, base, atol=1e-5, rtol=1e-5)


def test_bad_sliding_window_arguments():
    q, k, v = qkv(t=8)
    with pytest.raises(ValueError, match="backend"):
        ATTENTION["sliding_window"](q, k, v, window=2, backend="cuda-magic")
    with pytest.raises(ValueError, match="window"):
        ATTENTION["sliding_window"](q, k, v, window=-1)
