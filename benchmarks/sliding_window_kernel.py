"""Benchmark: the Triton sliding-window kernel vs FlexAttention vs dense SDPA (flash), on a GPU.

Band |i - j| <= window. First checks correctness against `attention_reference` (float64) on a small
odd shape, forward and gradients (tolerance rule: error at most 2x the PyTorch fallback's error in
the same dtype, plus one rounding step), then times forward and forward+backward with
`triton.testing.do_bench` (median) for
  triton  effx.kernels.sliding_window_triton (our kernel)
  flex    torch.compile(flex_attention) with a create_block_mask sliding-window mask_mod (same band)
  sdpa    dense F.scaled_dot_product_attention, flash backend (full T x T, for reference)
TFLOP/s count the band actually computed: 4*B*H*T*K*D, K = keys per query averaged over queries
(dense T for sdpa); forward+backward counts 3.5x the forward (backward = 2.5x, RESEARCH.md section 4).
Prints a markdown table and one final JSON line; --out PATH (.json or .csv) writes tidy rows with
provenance.

    python benchmarks/sliding_window_kernel.py [--lengths 2048 4096 ...] [--window 512] [--out PATH]
    python benchmarks/sliding_window_kernel.py --interpret-smoke   # CPU, TRITON_INTERPRET=1, tiny
"""
from __future__ import annotations

import os
import sys

if "--interpret-smoke" in sys.argv:  # the interpreter must be chosen before triton is imported
    os.environ["TRITON_INTERPRET"] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from effx.attention.reference import attention_flops, attention_reference, sliding_window_mask  # noqa: E402
from effx.attention.sliding_window import sliding_window_attention_torch  # noqa: E402
from effx.provenance import new_run  # noqa: E402

STUDY = "sliding_window_kernel"
BWD_FACTOR = 3.5                                   # forward + backward = (1 + 2.5) x forward FLOPs
GPU_DEFAULTS = dict(batch=1, heads=16, head_dim=64, window=512, lengths=[2048, 4096, 8192, 16384, 32768])
VARIANTS = ("triton", "flex", "sdpa")
SMOKE_DEFAULTS = dict(batch=1, heads=2, head_dim=16, window=8, lengths=[48, 96])


# ------------------------------------------------------------------------------ band arithmetic

def keys_per_query(t: int, window: int) -> float:
    """Average number of keys j in [0, T) with |i - j| <= window, over the T queries."""
    w = min(window, t - 1)
    # full band (2w+1) minus the keys cut off at both edges: 2 * sum_{r=1..w} r = w(w+1)
    return ((2 * w + 1) * t - w * (w + 1)) / t


def band_flops(b, h, t, d, window) -> float:
    return attention_flops(b, h, t, d, keys_per_query=keys_per_query(t, window))


# ------------------------------------------------------------------------------ the variants

def triton_variant(window):
    from effx.kernels.sliding_window_triton import sliding_window_attention_triton
    return lambda q, k, v: sliding_window_attention_triton(q, k, v, window=window)


_FLEX = None


def flex_variant(window, t, device):
    """Compiled FlexAttention with the same band as a block mask (built once per T, not timed)."""
    global _FLEX
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    if _FLEX is None:
        import torch._dynamo.config as dynamo_config
        for name in ("cache_size_limit", "recompile_limit"):    # one compile per (T, mode)
            if hasattr(dynamo_config, name):
                setattr(dynamo_config, name, max(64, getattr(dynamo_config, name)))
        _FLEX = torch.compile(flex_attention, dynamic=False)

    def band(b, h, q_idx, kv_idx):
        return (q_idx - kv_idx).abs() <= window

    try:
        block_mask = create_block_mask(band, None, None, t, t, device=device, _compile=True)
    except TypeError:                                            # torch without the _compile flag
        block_mask = create_block_mask(band, None, None, t, t, device=device)
    return lambda q, k, v: _FLEX(q, k, v, block_mask=block_mask)


def sdpa_variant(force_flash: bool):
    def run(q, k, v):
        if not force_flash:
            return F.scaled_dot_product_attention(q, k, v)
        from torch.nn.attention import SDPBackend, sdpa_kernel
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v)
    return run


# ------------------------------------------------------------------------------ correctness

def finite_or_none(value):
    """JSON-safe: NaN/inf (failed points) become null."""
    if isinstance(value, float) and value != value or value in (float("inf"), float("-inf")):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_or_none(v) for v in value]
    return value


def max_err(a, b):
    return (a.double() - b.double()).abs().max().item()


def check_variant(name, fn, b, h, t, d, window, dtype, device, seed=0):
    """Forward and gradients of `fn` vs float64 reference; 2x the fallback's error + one rounding."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    q, k, v, do = (torch.randn((b, h, t, d), generator=gen).to(device=device, dtype=dtype) for _ in range(4))
    results = {}
    for label, f, cast in (("kernel", fn, dtype), ("fallback", lambda *x: sliding_window_attention_torch(
            *x, window=window), dtype), ("reference", lambda *x: attention_reference(
            *x, mask=sliding_window_mask(t, window, device=device)), torch.float64)):
        xs = [x.detach().to(cast).requires_grad_(True) for x in (q, k, v)]
        out = f(*xs)
        grads = torch.autograd.grad(out, xs, do.to(out.dtype))
        results[label] = (out, *grads)
    failures = []
    for i, part in enumerate(("out", "dq", "dk", "dv")):
        got, base, ref = (results[x][i] for x in ("kernel", "fallback", "reference"))
        err, base_err = max_err(got, ref), max_err(base, ref)
        bound = 2 * base_err + torch.finfo(dtype).eps * ref.abs().max().item() + 1e-5
        if not (torch.isfinite(got).all() and err <= bound):
            failures.append(f"{name} {part}: error {err:.3e} > bound {bound:.3e} (fallback {base_err:.3e})")
    return failures


# ------------------------------------------------------------------------------ timing

def median_ms(fn, smoke: bool, grad_to_none=None) -> float:
    if smoke:                                      # interpreter: wall clock, a few repeats
        times = []
        for _ in range(3):
            for x in grad_to_none or ():
                x.grad = None
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)
    from triton.testing import do_bench
    try:
        return float(do_bench(fn, grad_to_none=grad_to_none, return_mode="median"))
    except TypeError:                              # older triton: no return_mode
        return float(do_bench(fn, grad_to_none=grad_to_none, quantiles=[0.5])[0])


def measure(fn, b, h, t, d, dtype, device, mode, smoke):
    q, k, v, do = (torch.randn((b, h, t, d), device=device, dtype=dtype) for _ in range(4))
    if mode == "fwd":
        with torch.no_grad():
            return median_ms(lambda: fn(q, k, v), smoke)
    q, k, v = (x.requires_grad_(True) for x in (q, k, v))
    return median_ms(lambda: fn(q, k, v).backward(do), smoke, grad_to_none=[q, k, v])


# ------------------------------------------------------------------------------ main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--interpret-smoke", action="store_true",
                   help="tiny CPU run under TRITON_INTERPRET=1 (no flex, no torch.compile)")
    p.add_argument("--lengths", type=int, nargs="+", help="sequence lengths T")
    p.add_argument("--window", type=int, help="band half-width: keys |i - j| <= window")
    p.add_argument("--heads", type=int)
    p.add_argument("--head-dim", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--modes", nargs="+", default=["fwd", "fwd_bwd"], choices=["fwd", "fwd_bwd"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--out", type=Path, help="write tidy rows + provenance (.json or .csv)")
    args = p.parse_args(argv)
    defaults = SMOKE_DEFAULTS if args.interpret_smoke else GPU_DEFAULTS
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.interpret_smoke:
        args.variants = [v for v in args.variants if v != "flex"]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    smoke = args.interpret_smoke
    if not smoke and not torch.cuda.is_available():
        print(f"{STUDY}: needs a CUDA GPU and none is available here. "
              "Run with --interpret-smoke for a tiny CPU check of this script's code path.", file=sys.stderr)
        return 2
    device = "cpu" if smoke else "cuda"
    dtype = torch.bfloat16
    b, h, d, w = args.batch, args.heads, args.head_dim, args.window
    run = new_run(STUDY, "smoke" if smoke else "gpu", {k: (str(v) if isinstance(v, Path) else v)
                                                        for k, v in vars(args).items()}, device=device)
    device_label = run["hardware"].get("gpu_name", run["hardware"]["cpu_model"])

    # 1. correctness first, on a small odd shape with interior and edge blocks
    check_shape = (1, 2, 70, 16, 9) if smoke else (1, 2, 1031, 64, 200)
    failures = check_variant("triton", triton_variant(check_shape[-1]), *check_shape, dtype, device)
    if "flex" in args.variants:
        failures += check_variant("flex", flex_variant(check_shape[-1], check_shape[2], device),
                                  *check_shape, dtype, device)
    if failures:
        print(f"{STUDY}: correctness check FAILED, nothing timed:\n  " + "\n  ".join(failures),
              file=sys.stderr)
        return 1
    print(f"correctness vs float64 reference (B,H,T,D,window={check_shape}): ok for "
          f"{', '.join(v for v in args.variants if v != 'sdpa')}", flush=True)

    # 2. timing
    rows, ms = [], {}
    for t in args.lengths:
        for name in args.variants:
            fn = {"triton": lambda: triton_variant(w), "flex": lambda: flex_variant(w, t, device),
                  "sdpa": lambda: sdpa_variant(force_flash=not smoke)}[name]()
            flops_fwd = attention_flops(b, h, t, d) if name == "sdpa" else band_flops(b, h, t, d, w)
            for mode in args.modes:
                status, value = "ok", float("nan")
                try:
                    value = measure(fn, b, h, t, d, dtype, device, mode, smoke)
                except torch.cuda.OutOfMemoryError:
                    status = "oom"
                except Exception as exc:  # noqa: BLE001 - one failing variant must not stop the sweep
                    first_line = (str(exc).splitlines() or [""])[0][:200]
                    status = f"error: {type(exc).__name__}: {first_line}"
                if device == "cuda":
                    torch.cuda.empty_cache()
                flops = flops_fwd * (BWD_FACTOR if mode == "fwd_bwd" else 1.0)
                tflops = flops / (value * 1e-3) / 1e12 if status == "ok" else float("nan")
                ms[(name, mode, t)] = value
                point = dict(study=STUDY, variant=name, device=device_label, dtype="bfloat16", mode=mode,
                             batch=b, heads=h, head_dim=d, window=w, length=t, status=status,
                             flops_counted="dense" if name == "sdpa" else "band")
                rows.append({**point, "metric": "time_ms", "value": value})
                rows.append({**point, "metric": "tflops", "value": tflops})
                print(f"  T={t:6d} {name:6s} {mode:7s} {value:9.3f} ms  {tflops:7.1f} TFLOP/s  {status}",
                      flush=True)

    summary = summarize(args, ms)
    print()
    print(markdown_table(args, ms, b, h, d, w))
    print()
    for (name, mode), ratio in summary["linearity"].items():
        print(f"linearity {name} {mode}: (ms/T at T={max(args.lengths)}) / "
              f"(ms/T at T={min(args.lengths)}) = {ratio:.2f}")
    record = {"benchmark": STUDY, "run_id": run["run_id"], "commit": run["commit"], "device": device_label,
              "dtype": "bfloat16", "batch": b, "heads": h, "head_dim": d, "window": w, "correct": True,
              "ms": {f"{n}/{m}/{t}": v for (n, m, t), v in ms.items()},
              "speedup_vs_flex": {f"{m}/{t}": r for (m, t), r in summary["speedup_vs_flex"].items()},
              "linearity": {f"{n}/{m}": r for (n, m), r in summary["linearity"].items()}}
    if args.out:
        write_out(args.out, rows, run, record)
        print(f"wrote {args.out}")
    print(json.dumps(finite_or_none(record), default=str))
    return 0


def summarize(args, ms):
    """speedup_vs_flex = flex ms / triton ms (> 1: our kernel is faster); linearity = time per token
    at the largest T over time per token at the smallest T (1.0 = perfectly linear)."""
    lo, hi = min(args.lengths), max(args.lengths)
    speedup = {(m, t): ms[("flex", m, t)] / ms[("triton", m, t)]
               for m in args.modes for t in args.lengths if ("flex", m, t) in ms and ("triton", m, t) in ms}
    linearity = {(n, m): (ms[(n, m, hi)] / hi) / (ms[(n, m, lo)] / lo)
                 for n in args.variants for m in args.modes if n != "sdpa" and (n, m, lo) in ms}
    return {"speedup_vs_flex": speedup, "linearity": linearity}


def markdown_table(args, ms, b, h, d, w):
    names = args.variants
    head = ["T", "mode"] + [f"{n} ms" for n in names] + [f"{n} TFLOP/s" for n in names]
    if "flex" in names and "triton" in names:
        head.append("flex/triton (speedup)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in args.lengths:
        for m in args.modes:
            factor = BWD_FACTOR if m == "fwd_bwd" else 1.0
            cells = [str(t), m] + [f"{ms[(n, m, t)]:.3f}" for n in names]
            for n in names:
                flops = (attention_flops(b, h, t, d) if n == "sdpa" else band_flops(b, h, t, d, w)) * factor
                cells.append(f"{flops / (ms[(n, m, t)] * 1e-3) / 1e12:.1f}")
            if "flex" in names and "triton" in names:
                cells.append(f"{ms[('flex', m, t)] / ms[('triton', m, t)]:.2f}")
            lines.append("| " + " | ".join(cells) + " |")
    note = (f"B={b}, H={h}, D={d}, window={w} (|i-j|<={w}), bfloat16; TFLOP/s on the band "
            f"(sdpa: dense T x T); fwd_bwd counts {BWD_FACTOR}x the forward FLOPs")
    return "\n".join(lines + ["", note])


def write_out(path: Path, rows, run, record):
    path.parent.mkdir(parents=True, exist_ok=True)
    prov = {"run_id": run["run_id"], "commit": run["commit"], "date": run["date"],
            "torch": run["versions"]["torch"], "triton": run["versions"]["triton"],
            "cuda": run["hardware"].get("cuda", ""), "gpu_name": run["hardware"].get("gpu_name", ""),
            "cpu_model": run["hardware"]["cpu_model"]}
    if path.suffix == ".csv":
        import pandas as pd
        pd.DataFrame([{**r, **prov} for r in rows]).to_csv(path, index=False)
    else:
        path.write_text(json.dumps(finite_or_none({"run": run, "rows": rows, "summary": record}), indent=1,
                                   default=str) + "\n")


if __name__ == "__main__":
    sys.exit(main())
