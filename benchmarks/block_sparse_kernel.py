"""Benchmark: the Triton block-sparse kernel vs FlexAttention (same block mask) vs dense SDPA, on a GPU.

SPION-like layouts (Yoon, Han, Moon, arXiv 2309.12578): a synthetic attention map with a band,
off-diagonal stripes and global columns, turned into a block layout by effx.spion (diagonal
convolution F=31, block pooling, flood fill at the quantile whose density is closest to
--density, ~5-15 %). Defaults: T = 4096, batch x heads = 4 x 16 = 64, block 64, head dims 64 and
32, bfloat16 and float32, forward and forward+backward, standard softmax. Variants:
  triton  effx.kernels.block_sparse_triton with a prebuilt BlockIndex (our kernel)
  flex    torch.compile(flex_attention) with create_block_mask from the same layout (BLOCK_SIZE =
          block; falls back to the default 128 granularity, same mask, if that is refused)
  sdpa    dense F.scaled_dot_product_attention; the table also shows density x its time, the time
          a sparse kernel at dense efficiency would take
Correctness first: each sparse variant's output and gradients, at the timed shape, on the first
(batch, 2 heads) slice, against the float64 dense reference (effx.testing.within_rule: at most
2x the error of plain dense PyTorch in the same dtype). A failing variant is not timed; a failing
Triton kernel stops the run. TFLOP/s count computed blocks only: 4*B*H*nnz_blocks*block^2*D forward,
3.5x that for forward+backward (backward = 2.5x, RESEARCH.md section 4); sdpa counts the dense T x T.
Prints a markdown table and one final JSON line; --out PATH (.json or .csv) writes tidy rows with
provenance. Finishes in about 2-3 minutes on an H100/H200 (FlexAttention compiles dominate;
--budget-s stops starting new FlexAttention compiles past that many seconds).

    python benchmarks/block_sparse_kernel.py [--head-dims 64 32] [--dtypes bfloat16 float32] [--out PATH]
    python benchmarks/block_sparse_kernel.py --smoke     # CPU, TRITON_INTERPRET=1, tiny
"""
from __future__ import annotations

import os
import sys

if "--smoke" in sys.argv:  # the interpreter must be chosen before triton is imported
    os.environ["TRITON_INTERPRET"] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from effx.attention.block_sparse import faithful_reference, layout_density  # noqa: E402
from effx.attention.reference import attention_reference, block_layout_mask  # noqa: E402
from effx.provenance import new_run  # noqa: E402
from effx.spion.pattern import block_scores, diagonal_convolution, flood_fill  # noqa: E402
from effx.testing import outputs_and_grads, within_rule  # noqa: E402

STUDY = "block_sparse_kernel"
BWD_FACTOR = 3.5                                   # forward + backward = (1 + 2.5) x forward FLOPs
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}
VARIANTS = ("triton", "flex", "sdpa")
GPU_DEFAULTS = dict(batch=4, heads=16, length=4096, head_dims=[64, 32], dtypes=["bfloat16", "float32"],
                    block=64, density=0.10, budget_s=90.0)
SMOKE_DEFAULTS = dict(batch=1, heads=2, length=128, head_dims=[16], dtypes=["float32", "bfloat16"],
                      block=16, density=0.3, budget_s=600.0)
QUANTILES = (0.80, 0.85, 0.88, 0.90, 0.92, 0.94, 0.96, 0.97, 0.98, 0.99)


# ------------------------------------------------------------------------------ layout

def synthetic_map(t: int, seed: int = 0, device="cpu") -> torch.Tensor:
    """(T, T) row-stochastic map like a trained layer's: a local band, four off-diagonal stripes
    (at +-T/8 and +-T/3), two global key columns, and a little noise. float64 on ``device``."""
    idx = torch.arange(t, dtype=torch.float64, device=device)
    dist = idx[:, None] - idx[None, :]                                       # (T, T) i - j
    width = max(2.0, t / 128)
    m = torch.exp(-dist.abs() / width)
    for offset in (t // 8, -(t // 8), t // 3, -(t // 3)):
        m += 0.5 * torch.exp(-(dist - offset).abs() / width)
    for col in (t // 5, (3 * t) // 5):
        m[:, col] += 2.0
    m += 0.01 * torch.rand((t, t), generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(device)
    return m / m.sum(-1, keepdim=True)


def spion_like_layout(t: int, block: int, target: float, device="cpu"):
    """SPION CF layout of the synthetic map at the quantile whose density is closest to ``target``.
    Returns (layout bool (nb, nb) on the CPU, quantile, density)."""
    scores = block_scores(diagonal_convolution(synthetic_map(t, device=device), 31), block).cpu()  # (nb, nb)
    eye = torch.eye(scores.shape[0], dtype=torch.bool)
    best = None
    for q in QUANTILES:
        layout = flood_fill(scores, q) | eye
        gap = abs(layout_density(layout) - target)
        if best is None or gap < best[0]:
            best = (gap, layout, q)
    return best[1], best[2], layout_density(best[1])


def block_flops(b, h, nnz_blocks, block, d, mode) -> float:
    """FLOPs on computed blocks: 4*B*H*nnz*block^2*D forward; forward+backward 3.5x that."""
    return 4.0 * b * h * nnz_blocks * block * block * d * (BWD_FACTOR if mode == "fwd_bwd" else 1.0)


# ------------------------------------------------------------------------------ variants

def triton_variant(index, block, softmax):
    from effx.kernels.block_sparse_triton import block_sparse_attention_triton
    return lambda q, k, v: block_sparse_attention_triton(q, k, v, layout=index, block=block, softmax=softmax)


_FLEX = None


def flex_variant(layout, block, t, device):
    """Compiled FlexAttention; the block mask is built once (not timed). Returns (fn, granularity)."""
    global _FLEX
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    if _FLEX is None:
        import torch._dynamo.config as dynamo_config
        for name in ("cache_size_limit", "recompile_limit"):    # one compile per (dtype, D, mode)
            if hasattr(dynamo_config, name):
                setattr(dynamo_config, name, max(64, getattr(dynamo_config, name)))
        _FLEX = torch.compile(flex_attention, dynamic=False)
    lay = layout.to(device)

    def listed(b, h, q_idx, kv_idx):
        return lay[q_idx // block, kv_idx // block]

    try:
        mask, size = create_block_mask(listed, None, None, t, t, device=device, BLOCK_SIZE=block), block
    except Exception:  # noqa: BLE001 - this torch refuses the block size: same mask, 128 granularity
        mask, size = create_block_mask(listed, None, None, t, t, device=device), 128
    return (lambda q, k, v: _FLEX(q, k, v, block_mask=mask)), size


def sdpa_variant(q, k, v):
    return F.scaled_dot_product_attention(q, k, v)


# ------------------------------------------------------------------------------ correctness

def check_variant(fn, inputs, layout, block, softmax, heads=2):
    """Output and gradients of ``fn`` at the timed shape, on the slice [:1, :heads], vs float64.
    Returns a list of failure messages (empty = correct)."""
    q, k, v, do = inputs
    got = [x[:1, :heads] for x in outputs_and_grads(fn, q, k, v, do)]
    small = [x[:1, :heads] for x in (q, k, v, do)]
    mask = block_layout_mask(layout.to(q.device), block, q.shape[2])
    dense = attention_reference if softmax == "standard" else faithful_reference

    def masked(upcast):
        return lambda a, b, c: dense(a, b, c, mask=mask, upcast=upcast)

    plain = outputs_and_grads(masked(False), *small)
    ref = outputs_and_grads(masked(True), *small, torch.float64)
    verdicts = [within_rule(n, a, b, r) for n, a, b, r in zip(("out", "dq", "dk", "dv"), got, plain, ref)]
    return [str(v) for v in verdicts if not v.ok]


# ------------------------------------------------------------------------------ timing

def median_ms(fn, smoke: bool, grad_to_none=None) -> float:
    if smoke:                                      # interpreter: wall clock, a few repeats
        times = []
        for _ in range(2):
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


def measure(fn, inputs, mode, smoke):
    q, k, v, do = (x.detach() for x in inputs)
    if mode == "fwd":
        with torch.no_grad():
            return median_ms(lambda: fn(q, k, v), smoke)
    q, k, v = (x.requires_grad_(True) for x in (q, k, v))
    return median_ms(lambda: fn(q, k, v).backward(do), smoke, grad_to_none=[q, k, v])


# ------------------------------------------------------------------------------ main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny CPU run under TRITON_INTERPRET=1 (no flex)")
    p.add_argument("--length", type=int, help="sequence length T")
    p.add_argument("--batch", type=int)
    p.add_argument("--heads", type=int)
    p.add_argument("--head-dims", type=int, nargs="+")
    p.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES))
    p.add_argument("--block", type=int, help="layout block size (16..256, a power of two)")
    p.add_argument("--density", type=float, help="target layout density (fraction of blocks)")
    p.add_argument("--softmax", default="standard", choices=["standard", "faithful"],
                   help="faithful: SPION's semantics (FlexAttention is then skipped)")
    p.add_argument("--modes", nargs="+", default=["fwd", "fwd_bwd"], choices=["fwd", "fwd_bwd"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--budget-s", type=float, help="start no FlexAttention compile after this many seconds")
    p.add_argument("--out", type=Path, help="write tidy rows + provenance (.json or .csv)")
    args = p.parse_args(argv)
    for key, value in (SMOKE_DEFAULTS if args.smoke else GPU_DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.smoke or args.softmax == "faithful":
        args.variants = [v for v in args.variants if v != "flex"]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    smoke, started = args.smoke, time.perf_counter()
    if not smoke and not torch.cuda.is_available():
        print(f"{STUDY}: needs a CUDA GPU and none is available here. "
              "Run with --smoke for a tiny CPU check of this script's code path.", file=sys.stderr)
        return 2
    from effx.kernels.block_sparse_triton import block_index
    device = "cpu" if smoke else "cuda"
    b, h, t, block = args.batch, args.heads, args.length, args.block
    run = new_run(STUDY, "smoke" if smoke else "gpu", {k: (str(v) if isinstance(v, Path) else v)
                                                        for k, v in vars(args).items()}, device=device)
    device_label = run["hardware"].get("gpu_name", run["hardware"]["cpu_model"])

    layout, quantile, density = spion_like_layout(t, block, args.density, device)
    index = block_index(layout.to(device), block)
    nnz = index.nnz_blocks
    print(f"layout: T={t}, block={block}, nb={layout.shape[0]}, CF quantile {quantile}: "
          f"{nnz} blocks, density {density:.3f}", flush=True)

    rows, ms, correct = [], {}, {}
    for dtype_name in args.dtypes:
        dtype = DTYPES[dtype_name]
        for d in args.head_dims:
            gen = torch.Generator().manual_seed(d)
            inputs = [torch.randn((b, h, t, d), generator=gen).to(device, dtype) for _ in range(4)]
            config = f"{dtype_name}/{d}"
            for name in args.variants:
                if name == "flex" and time.perf_counter() - started > args.budget_s:
                    status, fn = "skipped: time budget", None
                else:
                    status, fn, flops_of = prepare(name, layout, index, block, t, device, args.softmax, inputs, b, h, d,
                                                   nnz, smoke)
                if name == "triton" and status != "ok":
                    print(f"{STUDY}: Triton kernel correctness check FAILED ({config}), nothing timed:\n  {status}",
                          file=sys.stderr)
                    return 1
                correct[f"{name}/{config}"] = status == "ok" if name != "sdpa" else None
                for mode in args.modes:
                    value = float("nan")
                    if fn is not None and status == "ok":
                        try:
                            value = measure(fn, inputs, mode, smoke)
                        except torch.cuda.OutOfMemoryError:
                            status = "oom"
                        except Exception as exc:  # noqa: BLE001 - one failing variant must not stop the sweep
                            status = f"error: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
                    flops = flops_of(mode) if fn is not None else float("nan")
                    tflops = flops / (value * 1e-3) / 1e12 if status == "ok" else float("nan")
                    ms[f"{name}/{mode}/{config}"] = value
                    point = dict(study=STUDY, variant=name, device=device_label, dtype=dtype_name, mode=mode,
                                 batch=b, heads=h, head_dim=d, length=t, block=block, density=density,
                                 nnz_blocks=nnz, softmax=args.softmax, status=status,
                                 flops_counted="dense" if name == "sdpa" else "computed blocks")
                    rows.append({**point, "metric": "time_ms", "value": value})
                    rows.append({**point, "metric": "tflops", "value": tflops})
                    print(f"  {name:6s} {config:12s} {mode:7s} {value:9.3f} ms  {tflops:7.1f} TFLOP/s  {status}",
                          flush=True)
                if device == "cuda":
                    torch.cuda.empty_cache()

    print()
    print(markdown_table(args, ms, rows, density))
    record = {"benchmark": STUDY, "run_id": run["run_id"], "commit": run["commit"], "device": device_label,
              "batch": b, "heads": h, "length": t, "block": block, "density": density, "nnz_blocks": nnz,
              "quantile": quantile, "softmax": args.softmax,
              "correct": {"triton": all(v for k, v in correct.items() if k.startswith("triton/")),
                          **{k: v for k, v in correct.items() if v is not None}},
              "ms": ms, "speedup": speedups(ms, density), "seconds": round(time.perf_counter() - started, 1)}
    if args.out:
        write_out(args.out, rows, run, record)
        print(f"wrote {args.out}")
    print(json.dumps(finite_or_none(record), default=str))
    return 0


def prepare(name, layout, index, block, t, device, softmax, inputs, b, h, d, nnz, smoke):
    """(status, fn, flops(mode)) of one variant; sparse variants are checked for correctness first."""
    if name == "sdpa":
        return "ok", sdpa_variant, lambda mode: block_flops(b, h, (t / block) ** 2, block, d, mode)
    try:
        if name == "triton":
            fn = triton_variant(index, block, softmax)
        else:
            fn, size = flex_variant(layout, block, t, device)
            if size != block:
                print(f"  flex: BLOCK_SIZE={block} refused, block mask at {size} granularity", flush=True)
        failures = check_variant(fn, inputs, layout, block, softmax)
    except Exception as exc:  # noqa: BLE001 - e.g. a FlexAttention compile failure
        return f"error: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}", None, None
    status = "ok" if not failures else "incorrect: " + "; ".join(failures)
    print(f"  {name}: correctness vs float64 reference (slice [:1, :2]): {status}", flush=True)
    return status, fn, lambda mode: block_flops(b, h, nnz, block, d, mode)


def speedups(ms, density):
    """flex/triton (> 1: our kernel is faster) and (density x sdpa)/triton (> 1: faster than dense
    attention scaled down to the layout's density)."""
    out = {}
    for key, value in ms.items():
        name, rest = key.split("/", 1)
        if name != "triton":
            continue
        if f"flex/{rest}" in ms:
            out[f"flex_over_triton/{rest}"] = ms[f"flex/{rest}"] / value
        if f"sdpa/{rest}" in ms:
            out[f"dense_x_density_over_triton/{rest}"] = density * ms[f"sdpa/{rest}"] / value
    return out


def markdown_table(args, ms, rows, density):
    head = ["variant", "dtype", "D", "mode", "ms", "TFLOP/s", "triton speedup"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    tflops = {(r["variant"], r["mode"], r["dtype"], r["head_dim"]): r["value"] for r in rows if r["metric"] == "tflops"}
    for dtype_name in args.dtypes:
        for d in args.head_dims:
            for mode in args.modes:
                for name in args.variants:
                    key = f"{name}/{mode}/{dtype_name}/{d}"
                    triton_ms = ms.get(f"triton/{mode}/{dtype_name}/{d}", float("nan"))
                    label, value = name, ms.get(key, float("nan"))
                    lines.append(f"| {label} | {dtype_name} | {d} | {mode} | {value:.3f} | "
                                 f"{tflops.get((name, mode, dtype_name, d), float('nan')):.1f} | "
                                 f"{value / triton_ms:.2f} |")
                    if name == "sdpa":
                        lines.append(f"| sdpa x density | {dtype_name} | {d} | {mode} | {density * value:.3f} | "
                                     f"- | {density * value / triton_ms:.2f} |")
    note = (f"B={args.batch}, H={args.heads}, T={args.length}, block={args.block}, density {density:.3f}, "
            f"softmax {args.softmax}; TFLOP/s on computed blocks (sdpa: dense T x T); fwd_bwd counts "
            f"{BWD_FACTOR}x the forward; triton speedup = variant ms / triton ms (> 1: triton faster)")
    return "\n".join(lines + ["", note])


def finite_or_none(value):
    """JSON-safe: NaN/inf (failed points) become null."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_or_none(v) for v in value]
    return value


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
