"""Every attention variant against the one dense reference, with odd sizes and invariances, and
every spec (effx.attention.spec) against its function."""
import math

import pytest
import torch

from effx.attention import ATTENTION, REQUIRED, attention_reference, band_layout
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


# -- the specs (effx.attention.spec): one record per variant, read by everything else ---------

def spec_cases():
    """(variant, options, T) for every exact variant, odd sizes."""
    layout = (torch.rand(3, 15, 15, generator=torch.Generator().manual_seed(5)) < 0.3) | torch.eye(15, dtype=torch.bool)
    return [("sdpa", {}, 63), ("eager", {}, 63), ("sliding_window", {"window": 5}, 63),
            ("sliding_window", {"window": 80, "backend": "torch"}, 301), ("sliding_window", {"window": 99}, 70),
            ("block_sparse", {"block": 16}, 63), ("block_sparse", {"block": 7, "band": 2}, 100),
            ("block_sparse", {"block": 7, "layout": layout}, 100)]


@pytest.mark.parametrize("name, opts, t", spec_cases(), ids=lambda x: str(x) if not isinstance(x, dict) else
                         ",".join(f"{k}={'L' if torch.is_tensor(v) else v}" for k, v in x.items()))
def test_spec_call_equals_reference_on_its_mask(name, opts, t):
    """What the spec says (call options, mask, keys per query) is what the function does."""
    spec = ATTENTION[name]
    q, k, v = qkv(t=t)
    kpm = padding_mask(2, t, 9)
    out = spec.fn(q, k, v, key_padding_mask=kpm, **spec.call_options(t, **opts))
    mask = spec.mask(t, **opts)
    ref = attention_reference(q, k, v, mask=mask[None] if mask.dim() == 3 else mask, key_padding_mask=kpm)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert spec.keys_per_query(t, **opts) == pytest.approx(mask.double().sum(-1).mean().item(), rel=1e-12)


def test_every_spec_declares_exactly_the_options_of_its_function():
    """Each option of the function (besides the shared ones) is declared with the spec, and the
    spec declares nothing the function would refuse, except options it turns into call options."""
    import inspect
    for name, spec in ATTENTION.items():
        params = inspect.signature(spec.fn).parameters
        taken = {p for p, x in params.items() if x.kind == x.KEYWORD_ONLY or p not in ("q", "k", "v")}
        taken -= {"key_padding_mask", "scale"}
        built = set(spec.call_options(64, **{k: 8 for k, v in spec.options.items() if v is REQUIRED}))
        assert built == taken, f"{name}: call options {sorted(built)} vs function options {sorted(taken)}"


def test_spec_options_are_checked():
    sw_spec = ATTENTION["sliding_window"]
    with pytest.raises(ValueError, match="needs the option 'window'"):
        sw_spec.call_options(10)
    with pytest.raises(ValueError, match="no option 'landmarks'"):
        ATTENTION["nystrom"].resolve(landmarks=3)
    assert ATTENTION["nystrom"].mask(10) is None and not ATTENTION["nystrom"].exact
    assert sw_spec.label(window=256, backend="torch") == "window=256"      # the path is not the method
    assert ATTENTION["block_sparse"].label() == "block=64,band=1,softmax=standard"
    lay = band_layout(4, 1)
    assert ATTENTION["block_sparse"].label(layout=lay) != ATTENTION["block_sparse"].label(layout=~lay)


def test_block_sparse_uses_a_given_layout_instead_of_the_band():
    spec = ATTENTION["block_sparse"]
    lay = torch.eye(4, dtype=torch.bool)
    assert spec.call_options(60, block=16, layout=lay)["layout"] is lay
    assert torch.equal(spec.call_options(60, block=16, band=1)["layout"], band_layout(4, 1))
    assert spec.keys_per_query(64, block=16, layout=lay) == 16


def test_calling_a_spec_calls_its_function():
    q, k, v = qkv(t=20)
    torch.testing.assert_close(ATTENTION["eager"](q, k, v), ATTENTION["eager"].fn(q, k, v))


# -- the sliding window's torch path: both of its implementations, and the tolerance rule --------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_fused_chunk_math_equals_the_cpu_flash_kernel(dtype):
    """The plain-PyTorch chunk math (used off CPU) equals PyTorch's CPU flash kernel, forward and
    backward, masked rows (no allowed key) included."""
    from effx.attention import sliding_window_torch as sw
    g = torch.Generator().manual_seed(1)
    q, do = (torch.randn(6, 4, 16, 8, generator=g, dtype=dtype) for _ in range(2))
    k, v = (torch.randn(6, 4, 40, 8, generator=g, dtype=dtype) for _ in range(2))
    allowed = torch.rand(1, 4, 16, 40, generator=g) < 0.3
    allowed[:, 2, 5] = False
    mask = sw._additive(allowed, dtype, "cpu")
    flash = sw._fused_forward(q, k, v, mask, 0.3)
    plain = sw._fused_forward(q, k, v, mask, 0.3, plain=True)
    for a, b in zip(flash, plain):
        torch.testing.assert_close(a, b.to(a.dtype))
    assert flash[0][:, 2, 5].abs().max() == 0
    grads = [sw._fused_backward(do, q, k, v, *flash, mask, 0.3, plain=p) for p in (False, True)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("t, window", [(301, 70), (100, 3), (64, 200)], ids=str)
def test_sliding_window_torch_path_within_the_tolerance_rule(dtype, t, window):
    """effx's one tolerance rule (effx.testing) for the torch path, output and every gradient."""
    from effx.testing import compare_paths
    q, k, v, do = qkv(b=2, h=2, t=t, d=16, seed=t) + [torch.randn(2, 2, t, 16)]
    kpm = padding_mask(2, t, 11)
    mask = sliding_window_mask(t, window)
    verdicts = compare_paths(
        lambda *x: ATTENTION["sliding_window"].fn(*x, window=window, key_padding_mask=kpm, backend="torch"),
        lambda *x: attention_reference(*x, mask=mask, key_padding_mask=kpm, upcast=False),
        lambda *x: attention_reference(*x, mask=mask, key_padding_mask=kpm),
        *(x.to(dtype) for x in (q, k, v, do)))
    assert all(x.ok for x in verdicts), "; ".join(map(str, verdicts))


@pytest.mark.parametrize("window", [2, 200], ids=["chunks", "one_chunk"])
def test_sliding_window_takes_any_strides(window):
    """(B, T, H, D) projections viewed as (B, H, T, D), as every encoder passes them."""
    x = torch.randn(1, 100, 3, 3 * 8)
    q, k, v = (y.transpose(1, 2) for y in x.split(8, dim=-1))            # non-contiguous views
    out = ATTENTION["sliding_window"].fn(q, k, v, window=window, backend="torch")
    ref = attention_reference(q, k, v, mask=sliding_window_mask(100, window))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
