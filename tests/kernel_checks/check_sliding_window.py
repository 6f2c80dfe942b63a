"""Checks of the Triton sliding-window kernel on CPU under the Triton interpreter.

Run as a script (it sets TRITON_INTERPRET=1 itself, before triton is imported):

    python tests/kernel_checks/check_sliding_window.py [--only NAME ...] [--seed N]

Each check runs the kernel through the public call (``sliding_window_attention(...,
backend="triton")``, the custom op that autograd and FlopCounterMode see) on small odd shapes and
holds it to effx's one tolerance rule (``effx.testing``): against `attention_reference` in
float64, its error may be at most 2x the error of the same reference computed in the working
dtype (plain PyTorch), plus one rounding step, for the output and every gradient, in every dtype.
Prints one JSON line per check and exits with status 1 if any check fails.
`tests/test_sliding_window_kernel.py` runs this script in a subprocess and reports each check.
"""
from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"  # must precede any triton import

import sys  # noqa: E402

import torch  # noqa: E402

from harness import CheckFailed, Checks  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from effx.attention import ATTENTION  # noqa: E402
from effx.attention import sliding_window as sw  # noqa: E402
from effx.attention.reference import attention_reference, sliding_window_mask  # noqa: E402
from effx.kernels import sliding_window_triton as kernel  # noqa: E402
from effx.profiling.flops import count_flops  # noqa: E402
from effx.testing import compare_paths, within_rule  # noqa: E402

checks = Checks(__doc__)







def inputs(shape, dtype, gen, requires_grad=False):
    return [torch.randn(shape, generator=gen).to(dtype).requires_grad_(requires_grad) for _ in range(3)]


def triton_path(window, kpm=None, scale=None):
    return lambda q, k, v: sw.sliding_window_attention(q, k, v, window=window, key_padding_mask=kpm,
                                                       scale=scale, backend="triton")


def reference(window, kpm=None, scale=None, upcast=True):
    """Band attention from the one dense reference: float64 (upcast) or in the inputs' dtype."""
    return lambda q, k, v: attention_reference(q, k, v, mask=sliding_window_mask(q.shape[2], window),
                                               key_padding_mask=kpm, scale=scale, upcast=upcast)


def rule_forward(name, q, k, v, window, kpm=None, scale=None):
    """The tolerance rule on the output alone (no gradients)."""
    verdict = within_rule(name, triton_path(window, kpm, scale)(q, k, v),
                          reference(window, kpm, scale, upcast=False)(q, k, v),
                          reference(window, kpm, scale)(q.double(), k.double(), v.double()))
    if not verdict.ok:
        raise CheckFailed(str(verdict))
    return f"{verdict.error:.1e}"


def rule_all(gen, b, h, t, d, window, dtype=torch.float32, kpm=None, scale=None):
    """The tolerance rule on the output and dq, dk, dv for a random upstream gradient."""
    q, k, v = inputs((b, h, t, d), dtype, gen)
    do = torch.randn((b, h, t, d), generator=gen).to(dtype)
    verdicts = compare_paths(triton_path(window, kpm, scale), reference(window, kpm, scale, upcast=False),
                             reference(window, kpm, scale), q, k, v, do)
    failed = [str(x) for x in verdicts if not x.ok]
    if failed:
        raise CheckFailed("; ".join(failed))
    return "errors out/dq/dk/dv: " + ", ".join(f"{x.error:.1e} (bound {x.bound:.1e})" for x in verdicts)


class OpLog(TorchDispatchMode):
    """Records the effx custom ops called and their arguments (observes; changes nothing)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "effx":
            self.calls.append((func.__name__.split(".")[0], args))
        return func(*args, **(kwargs or {}))


# ------------------------------------------------------------------------------------- checks

@checks.register
def check_forward_band_fp32(gen):
    notes = []
    for b, h, t, d, w in [(2, 2, 63, 16, 5), (1, 2, 100, 32, 17), (1, 1, 130, 16, 40), (1, 1, 1, 16, 3)]:
        q, k, v = inputs((b, h, t, d), torch.float32, gen)
        notes.append(f"T={t},D={d},w={w}: {rule_forward(f'T={t} D={d} w={w}', q, k, v, w)}")
    return "; ".join(notes)


@checks.register
def check_window_ge_T_equals_dense(gen):
    q, k, v = inputs((1, 2, 63, 32), torch.float32, gen)
    dense = attention_reference(q.double(), k.double(), v.double())
    plain = attention_reference(q, k, v, upcast=False)
    for w in (62, 63, 1000):
        verdict = within_rule(f"window={w}", triton_path(w)(q, k, v), plain, dense)
        if not verdict.ok:
            raise CheckFailed(str(verdict))
    return "window 62, 63, 1000 equal dense attention at T=63"


@checks.register
def check_window_zero_returns_v(gen):
    q, k, v = inputs((2, 1, 37, 16), torch.float32, gen)
    out = triton_path(0)(q, k, v)
    if not torch.equal(out, v):
        raise CheckFailed(f"window=0 must return v exactly; max difference {(out - v).abs().max():.1e}")
    return "each query sees only itself: out == v"


@checks.register
def check_key_padding(gen):
    b, h, t, d, w = 2, 2, 100, 32, 6
    q, k, v = inputs((b, h, t, d), torch.float32, gen)
    kpm = torch.rand((b, t), generator=gen) > 0.3
    kpm[0, 80:] = False                                 # right padding
    kpm[1, 10:30] = False                               # a hole wider than 2w+1: empty rows 17..22
    rule_forward("vs reference", q, k, v, w, kpm)
    out = triton_path(w, kpm)(q, k, v)
    if out[1, :, 17:23].abs().max() != 0:
        raise CheckFailed("rows with no allowed key must be exactly zero")
    # padded keys/values must never change what real tokens see
    k2, v2 = k.clone(), v.clone()
    pad = ~kpm
    k2[pad[:, None, :, None].expand_as(k2)] = 1e4
    v2[pad[:, None, :, None].expand_as(v2)] = -1e4
    out2 = triton_path(w, kpm)(q, k2, v2)
    real = kpm[:, None, :, None].expand_as(out)
    if not torch.equal(out[real], out2[real]):
        raise CheckFailed("changing padded k/v changed real-token outputs by "
                          f"{(out[real] - out2[real]).abs().max():.2e}")
    return "matches reference; empty rows are 0; padded k/v never leak into real tokens"


@checks.register
def check_grads_fp32_band(gen):
    return rule_all(gen, 1, 2, 63, 16, 5)


@checks.register
def check_grads_fp32_padding_odd_T(gen):
    b, t = 2, 100
    kpm = torch.rand((b, t), generator=gen) > 0.25
    kpm[1, 40:60] = False                               # empty rows (w=4): zero grads there
    return rule_all(gen, b, 1, t, 32, 4, kpm=kpm)


@checks.register
def check_grads_fp32_dense_and_window0(gen):
    a = rule_all(gen, 1, 1, 45, 16, 200)
    z = rule_all(gen, 1, 1, 45, 16, 0)
    return f"window>=T: {a}; window=0: {z}"


@checks.register
def check_custom_scale_and_odd_head_dim(gen):
    return rule_all(gen, 1, 1, 50, 24, 7, scale=0.37)


@checks.register
def check_large_head_dims_forward(gen):
    notes = []
    for d in (64, 128):
        q, k, v = inputs((1, 1, 40, d), torch.float32, gen)
        notes.append(f"D={d}: {rule_forward(f'D={d}', q, k, v, 9)}")
    return "; ".join(notes)


@checks.register
def check_non_contiguous_inputs(gen):
    b, t, h, d, w = 2, 33, 2, 16, 4
    base = [torch.randn((b, t, h, d), generator=gen) for _ in range(3)]
    q, k, v = (x.transpose(1, 2) for x in base)         # (B, H, T, D) views, stride_d = 1
    rule_forward("(B,T,H,D) views", q, k, v, w)
    qs, ks, vs = (torch.randn((b, h, t, 2 * d), generator=gen)[..., ::2] for _ in range(3))  # stride_d = 2
    rule_forward("stride_d=2", qs, ks, vs, w)
    return "transposed views and strided last dim"


@checks.register
def check_bf16_forward_and_grads(gen):
    return low_precision(gen, torch.bfloat16)


@checks.register
def check_fp16_forward_and_grads(gen):
    return low_precision(gen, torch.float16)


def low_precision(gen, dtype):
    kpm = torch.ones((1, 100), dtype=torch.bool)
    kpm[:, 90:] = False
    q = inputs((1, 1, 4, 4), dtype, gen)[0]
    if triton_path(1)(q, q, q).dtype != dtype:
        raise CheckFailed(f"output dtype {triton_path(1)(q, q, q).dtype}, expected {dtype}")
    return rule_all(gen, 1, 2, 100, 32, 12, dtype=dtype, kpm=kpm)


@checks.register
def check_public_dispatch_backend_triton(gen):
    q, k, v = inputs((1, 2, 40, 16), torch.float32, gen)
    with OpLog() as log:
        sw.sliding_window_attention(q, k, v, window=3, backend="triton")
    paths = [args[-1] for name, args in log.calls]
    if paths != ["triton"]:
        raise CheckFailed(f"expected one effx op on the 'triton' path, saw {log.calls and paths}")
    rule_forward("backend='triton'", q, k, v, 3)
    return "backend='triton' on CPU tensors runs the kernel (interpreter) and matches the reference"


@checks.register
def check_flops_counted_equal_spec(gen):
    """FlopCounterMode counts the band on the kernel path, forward and backward (2.5x), as the spec
    says and as on the torch path: the same number whatever path ran."""
    b, h, t, d, w = 2, 3, 71, 24, 9
    spec = ATTENTION["sliding_window"]
    counted = {}
    for path in ("triton", "torch"):
        q, k, v = inputs((b, h, t, d), torch.float32, gen, requires_grad=True)
        out = []
        fwd, _ = count_flops(lambda: out.append(spec.fn(q, k, v, window=w, backend=path)))
        bwd, _ = count_flops(lambda: out[0].sum().backward())
        counted[path] = (fwd, bwd)
    want = (spec.flops(b, h, t, d, window=w), spec.backward_flops(b, h, t, d, window=w))
    if counted["triton"] != counted["torch"] or any(abs(c - x) > 1e-9 * x for c, x in zip(counted["triton"], want)):
        raise CheckFailed(f"counted {counted}, spec {want}")
    tiles = spec.computed_flops(b, h, t, d, path="triton", window=w)
    return (f"forward {want[0]:.0f}, backward {want[1]:.0f} FLOPs on both paths; the kernel "
            f"multiplies {tiles / want[0]:.2f}x the band (blocks {kernel.forward_blocks()})")


if __name__ == "__main__":
    sys.exit(checks.main(sys.argv[1:]))
