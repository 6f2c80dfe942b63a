"""Checks of the Triton sliding-window kernel on CPU under the Triton interpreter.

Run as a script (it sets TRITON_INTERPRET=1 itself, before triton is imported):

    python tests/kernel_checks/check_sliding_window.py [--only NAME ...] [--seed N]

Each check compares the kernel with `attention_reference` computed in float64, on small odd shapes.
Tolerance rule (flash-attention): in bf16/fp16 the kernel's max error against float64 may be at
most 2x the error of the PyTorch fallback doing the same math in the same dtype, plus one
rounding step at the largest value; in fp32 a plain atol. Prints one JSON line per check and exits
with status 1 if any check fails.
`tests/test_sliding_window_kernel.py` runs this script in a subprocess and reports each check.
"""
from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"  # must precede any triton import

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import zlib  # noqa: E402

import torch  # noqa: E402

from effx.attention import sliding_window as sw  # noqa: E402
from effx.attention.reference import attention_reference, sliding_window_mask  # noqa: E402
from effx.kernels.sliding_window_triton import sliding_window_attention_triton  # noqa: E402

CHECKS = {}
FP32_ATOL_OUT, FP32_ATOL_GRAD = 2e-5, 1e-4


def check(fn):
    CHECKS[fn.__name__.removeprefix("check_")] = fn
    return fn


class CheckFailed(AssertionError):
    pass


def inputs(shape, dtype, gen, requires_grad=False):
    return [torch.randn(shape, generator=gen).to(dtype).requires_grad_(requires_grad) for _ in range(3)]


def reference(q, k, v, window, kpm=None, scale=None):
    """float64 band attention (differentiable) from the one dense reference."""
    mask = sliding_window_mask(q.shape[2], window)
    return attention_reference(q.double(), k.double(), v.double(), mask=mask, key_padding_mask=kpm,
                               scale=scale)


def max_err(a, b):
    return (a.double() - b.double()).abs().max().item()


def expect_close(name, got, ref, atol):
    if not torch.isfinite(got).all():
        raise CheckFailed(f"{name}: non-finite values in kernel output")
    err = max_err(got, ref)
    if err > atol:
        raise CheckFailed(f"{name}: max |kernel - float64 ref| = {err:.3e} > atol {atol:.1e}")
    return err


def expect_rule(name, got, fallback, ref, dtype):
    """Kernel error <= 2 x the PyTorch fallback's error in the same dtype (+ floor)."""
    if not torch.isfinite(got).all():
        raise CheckFailed(f"{name}: non-finite values in kernel output")
    err, base = max_err(got, ref), max_err(fallback, ref)
    one_rounding = torch.finfo(dtype).eps * ref.abs().max().item() + 1e-5   # one ulp at the largest value
    if err > 2 * base + one_rounding:
        raise CheckFailed(f"{name}: kernel error {err:.3e} > 2 x fallback error {base:.3e} + "
                          f"one rounding {one_rounding:.1e} (dtype {dtype})")
    return f"{name} {err:.2e} (fallback {base:.2e})"


def forward_and_grads(fn, q, k, v, do, **kw):
    out = fn(q, k, v, **kw)
    grads = torch.autograd.grad(out, (q, k, v), do.to(out.dtype))
    return out, grads


def grads_fp32(gen, b, h, t, d, window, kpm=None, scale=None):
    q, k, v = inputs((b, h, t, d), torch.float32, gen, requires_grad=True)
    do = torch.randn((b, h, t, d), generator=gen)
    out, g = forward_and_grads(sliding_window_attention_triton, q, k, v, do, window=window,
                               key_padding_mask=kpm, scale=scale)
    ref, gr = forward_and_grads(reference, q, k, v, do, window=window, kpm=kpm, scale=scale)
    errs = [expect_close("out", out, ref, FP32_ATOL_OUT)]
    errs += [expect_close(n, a, r, FP32_ATOL_GRAD) for n, a, r in zip(("dq", "dk", "dv"), g, gr)]
    return "max errors out/dq/dk/dv: " + ", ".join(f"{e:.1e}" for e in errs)


# ------------------------------------------------------------------------------------- checks

@check
def check_forward_band_fp32(gen):
    notes = []
    for b, h, t, d, w in [(2, 2, 63, 16, 5), (1, 2, 100, 32, 17), (1, 1, 130, 16, 40), (1, 1, 1, 16, 3)]:
        q, k, v = inputs((b, h, t, d), torch.float32, gen)
        err = expect_close(f"T={t} D={d} w={w}", sliding_window_attention_triton(q, k, v, window=w),
                           reference(q, k, v, w), FP32_ATOL_OUT)
        notes.append(f"T={t},D={d},w={w}: {err:.1e}")
    return "; ".join(notes)


@check
def check_window_ge_T_equals_dense(gen):
    q, k, v = inputs((1, 2, 63, 32), torch.float32, gen)
    dense = attention_reference(q.double(), k.double(), v.double())
    for w in (62, 63, 1000):
        expect_close(f"window={w}", sliding_window_attention_triton(q, k, v, window=w), dense, FP32_ATOL_OUT)
    return "window 62, 63, 1000 equal dense attention at T=63"


@check
def check_window_zero_returns_v(gen):
    q, k, v = inputs((2, 1, 37, 16), torch.float32, gen)
    out = sliding_window_attention_triton(q, k, v, window=0)
    expect_close("window=0 vs v", out, v, FP32_ATOL_OUT)
    expect_close("window=0 vs reference", out, reference(q, k, v, 0), FP32_ATOL_OUT)
    return "each query sees only itself"


@check
def check_key_padding(gen):
    b, h, t, d, w = 2, 2, 100, 32, 6
    q, k, v = inputs((b, h, t, d), torch.float32, gen)
    kpm = torch.rand((b, t), generator=gen) > 0.3
    kpm[0, 80:] = False                                 # right padding
    kpm[1, 10:30] = False                               # a hole wider than 2w+1: empty rows 17..22
    out = sliding_window_attention_triton(q, k, v, window=w, key_padding_mask=kpm)
    expect_close("vs reference", out, reference(q, k, v, w, kpm), FP32_ATOL_OUT)
    if out[1, :, 17:23].abs().max() != 0:
        raise CheckFailed("rows with no allowed key must be exactly zero")
    # padded keys/values must never change what real tokens see
    k2, v2 = k.clone(), v.clone()
    pad = ~kpm
    k2[pad[:, None, :, None].expand_as(k2)] = 1e4
    v2[pad[:, None, :, None].expand_as(v2)] = -1e4
    out2 = sliding_window_attention_triton(q, k2, v2, window=w, key_padding_mask=kpm)
    real = kpm[:, None, :, None].expand_as(out)
    if not torch.equal(out[real], out2[real]):
        raise CheckFailed("changing padded k/v changed real-token outputs by "
                          f"{max_err(out[real], out2[real]):.2e}")
    return "matches reference; empty rows are 0; padded k/v never leak into real tokens"


@check
def check_grads_fp32_band(gen):
    return grads_fp32(gen, 1, 2, 63, 16, 5)


@check
def check_grads_fp32_padding_odd_T(gen):
    b, t = 2, 100
    kpm = torch.rand((b, t), generator=gen) > 0.25
    kpm[1, 40:60] = False                               # empty rows (w=4): zero grads there
    return grads_fp32(gen, b, 1, t, 32, 4, kpm=kpm)


@check
def check_grads_fp32_dense_and_window0(gen):
    a = grads_fp32(gen, 1, 1, 45, 16, 200)
    z = grads_fp32(gen, 1, 1, 45, 16, 0)
    return f"window>=T: {a}; window=0: {z}"


@check
def check_custom_scale_and_odd_head_dim(gen):
    return grads_fp32(gen, 1, 1, 50, 24, 7, scale=0.37)


@check
def check_large_head_dims_forward(gen):
    notes = []
    for d in (64, 128):
        q, k, v = inputs((1, 1, 40, d), torch.float32, gen)
        err = expect_close(f"D={d}", sliding_window_attention_triton(q, k, v, window=9),
                           reference(q, k, v, 9), FP32_ATOL_OUT)
        notes.append(f"D={d}: {err:.1e}")
    return "; ".join(notes)


@check
def check_non_contiguous_inputs(gen):
    b, t, h, d, w = 2, 33, 2, 16, 4
    base = [torch.randn((b, t, h, d), generator=gen) for _ in range(3)]
    q, k, v = (x.transpose(1, 2) for x in base)         # (B, H, T, D) views, stride_d = 1
    expect_close("(B,T,H,D) views", sliding_window_attention_triton(q, k, v, window=w),
                 reference(q, k, v, w), FP32_ATOL_OUT)
    qs, ks, vs = (torch.randn((b, h, t, 2 * d), generator=gen)[..., ::2] for _ in range(3))  # stride_d = 2
    expect_close("stride_d=2", sliding_window_attention_triton(qs, ks, vs, window=w),
                 reference(qs, ks, vs, w), FP32_ATOL_OUT)
    return "transposed views and strided last dim"


@check
def check_bf16_forward_and_grads(gen):
    return low_precision(gen, torch.bfloat16)


@check
def check_fp16_forward_and_grads(gen):
    return low_precision(gen, torch.float16)


def low_precision(gen, dtype):
    b, h, t, d, w = 1, 2, 100, 32, 12
    kpm = torch.ones((b, t), dtype=torch.bool)
    kpm[:, 90:] = False
    q, k, v = inputs((b, h, t, d), dtype, gen, requires_grad=True)
    do = torch.randn((b, h, t, d), generator=gen).to(dtype)
    kw = dict(window=w, key_padding_mask=kpm)
    out, g = forward_and_grads(sliding_window_attention_triton, q, k, v, do, **kw)
    fb, gf = forward_and_grads(sw.sliding_window_attention_torch, q, k, v, do, **kw)
    ref, gr = forward_and_grads(reference, q, k, v, do, window=w, kpm=kpm)
    if out.dtype != dtype:
        raise CheckFailed(f"output dtype {out.dtype}, expected {dtype}")
    notes = [expect_rule("out", out, fb, ref, dtype)]
    notes += [expect_rule(n, a, f, r, dtype) for n, a, f, r in zip(("dq", "dk", "dv"), g, gf, gr)]
    return "; ".join(notes)


@check
def check_public_dispatch_backend_triton(gen):
    q, k, v = inputs((1, 2, 40, 16), torch.float32, gen)
    calls = []
    original = sw.sliding_window_attention_triton

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    sw.sliding_window_attention_triton = spy
    try:
        out = sw.sliding_window_attention(q, k, v, window=3, backend="triton")
    finally:
        sw.sliding_window_attention_triton = original
    if not sw.HAS_TRITON_KERNEL or len(calls) != 1:
        raise CheckFailed(f"HAS_TRITON_KERNEL={sw.HAS_TRITON_KERNEL}, kernel calls={len(calls)}")
    expect_close("backend='triton'", out, reference(q, k, v, 3), FP32_ATOL_OUT)
    return "backend='triton' on CPU tensors runs the kernel (interpreter) and matches the reference"


# ------------------------------------------------------------------------------------- driver

def run(names, seed):
    failed = 0
    for name in names:
        gen = torch.Generator().manual_seed(seed + zlib.crc32(name.encode()))
        t0 = time.perf_counter()
        try:
            detail, ok = CHECKS[name](gen), True
        except CheckFailed as exc:
            detail, ok = str(exc), False
        except Exception:  # noqa: BLE001 - a crash is a failure with its traceback
            detail, ok = traceback.format_exc(), False
        failed += not ok
        print(json.dumps({"check": name, "ok": ok, "seconds": round(time.perf_counter() - t0, 2),
                          "seed": seed, "detail": detail}), flush=True)
    return failed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(CHECKS), help="run only these checks")
    parser.add_argument("--list", action="store_true", help="print the check names and exit")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(CHECKS))
        return 0
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    return 1 if run(args.only or list(CHECKS), args.seed) else 0


if __name__ == "__main__":
    sys.exit(main())
