"""Benchmark: sliding-window attention paths vs FlexAttention vs dense SDPA, on a GPU or on CPU.

Band |i - j| <= window. First checks correctness against `attention_reference` (float64) on a small
odd shape, forward and gradients, with effx's one tolerance rule (`effx.testing`: error at most 2x
that of the same reference computed in the working dtype, plus one rounding step); nothing is timed
if a check fails. Then times forward and forward+backward.

GPU (default), bfloat16, `triton.testing.do_bench` medians:
  triton  effx's kernel (``sliding_window_attention(backend="triton")``)
  flex    torch.compile(flex_attention) with a create_block_mask sliding-window mask_mod (same band)
  sdpa    dense F.scaled_dot_product_attention, flash backend (full T x T, for reference)
CPU (``--cpu``), float32, alternating repeats (A B A B ...) in one process, medians:
  torch   effx's torch path (chunks of queries against their key span, PyTorch's CPU flash kernel)
  sdpa    dense F.scaled_dot_product_attention (PyTorch's CPU flash kernel, full T x T)
  and the ratio torch / sdpa beside the analytic one, band pairs / T^2 (about (2w+1)/T).
  ``--clock cpu --threads 1`` times the CPU time of the process instead of the wall clock: on a
  machine shared with other jobs, what they cannot inflate.

Two throughputs per point (attention-gym's convention: forward 4*B*H*D per computed (query, key)
pair, forward+backward 3.5x that, the backward = 2.5x):
  tflops       on the blocks each path computes: the kernel's whole tiles (the autotuner's blocks
               at that T), flex's non-empty blocks, the torch path's chunk spans, all of dense SDPA
  band_tflops  on the band alone (the FLOPs FlopCounterMode counts for every path)
Prints a markdown table and one final JSON line; --out PATH (.json or .csv) writes tidy rows with
provenance.

    python benchmarks/sliding_window_kernel.py [--lengths 2048 4096 ...] [--window 512] [--out PATH]
    python benchmarks/sliding_window_kernel.py --cpu [--lengths 1024 ... 8192] [--windows 128 256]
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

from effx.attention import ATTENTION, attention_flops  # noqa: E402
from effx.attention.reference import attention_reference, sliding_window_mask  # noqa: E402
from effx.attention.sliding_window import band_pairs, sliding_window_attention  # noqa: E402
from effx.provenance import new_run  # noqa: E402
from effx.testing import compare_paths  # noqa: E402

STUDY = "sliding_window_kernel"
SPEC = ATTENTION["sliding_window"]
BWD_FACTOR = 1.0 + SPEC.backward_factor            # forward + backward = 3.5 x forward FLOPs
GPU_DEFAULTS = dict(batch=1, heads=16, head_dim=64, windows=[512], lengths=[2048, 4096, 8192, 16384, 32768],
                    variants=["triton", "flex", "sdpa"], modes=["fwd", "fwd_bwd"], repeats=0)
CPU_DEFAULTS = dict(batch=1, heads=12, head_dim=64, windows=[128, 256], lengths=[1024, 2048, 4096, 8192],
                    variants=["torch", "sdpa"], modes=["fwd"], repeats=7)
SMOKE_DEFAULTS = dict(batch=1, heads=2, head_dim=16, windows=[8], lengths=[48, 96],
                      variants=["triton", "sdpa"], modes=["fwd", "fwd_bwd"], repeats=3)
VARIANTS = ("triton", "torch", "flex", "sdpa")


# ------------------------------------------------------------------------------ the variants

def band_variant(window, backend):
    return lambda q, k, v: sliding_window_attention(q, k, v, window=window, backend=backend)


_FLEX = None


def flex_variant(window, t, device):
    """Compiled FlexAttention with the same band as a block mask (built once per T, not timed).
    Returns the function and the fraction of (128 x 128) blocks it computes."""
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
    density = 1.0 - float(block_mask.sparsity()) / 100.0
    return (lambda q, k, v: _FLEX(q, k, v, block_mask=block_mask)), density


def sdpa_variant(force_flash: bool):
    def run(q, k, v):
        if not force_flash:
            return F.scaled_dot_product_attention(q, k, v)
        from torch.nn.attention import SDPBackend, sdpa_kernel
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v)
    return run


def make_variant(name, window, t, device, smoke):
    """(function of q, k, v; forward FLOPs on the blocks it computes, given B, H, D)."""
    if name in ("triton", "torch"):
        return band_variant(window, name), lambda b, h, d: SPEC.computed_flops(b, h, t, d, path=name,
                                                                               window=window)
    if name == "flex":
        fn, density = flex_variant(window, t, device)
        return fn, lambda b, h, d: density * attention_flops(b, h, t, d)
    return sdpa_variant(force_flash=device == "cuda" and not smoke), lambda b, h, d: attention_flops(b, h, t, d)


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


def check_variant(name, fn, b, h, t, d, window, dtype, device, seed=0):
    """Forward and gradients of `fn` vs the float64 reference, effx's tolerance rule."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    q, k, v, do = (torch.randn((b, h, t, d), generator=gen).to(device=device, dtype=dtype) for _ in range(4))
    mask = sliding_window_mask(t, window, device=device)
    verdicts = compare_paths(fn, lambda *x: attention_reference(*x, mask=mask, upcast=False),
                             lambda *x: attention_reference(*x, mask=mask), q, k, v, do)
    return [f"{name} {x}" for x in verdicts if not x.ok]


# ------------------------------------------------------------------------------ timing

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def call_ms(fn, grad_to_none=(), clock="wall") -> float:
    """Milliseconds of one call (CPU, or the interpreter): wall clock, or the CPU time of this
    process (all its threads: with one thread, what other jobs on a busy machine cannot inflate)."""
    for x in grad_to_none:
        x.grad = None
    now = CLOCKS[clock]
    t0 = now()
    fn()
    return (now() - t0) * 1e3


def gpu_median_ms(fn, grad_to_none=None) -> float:
    from triton.testing import do_bench
    try:
        return float(do_bench(fn, grad_to_none=grad_to_none, return_mode="median"))
    except TypeError:                              # older triton: no return_mode
        return float(do_bench(fn, grad_to_none=grad_to_none, quantiles=[0.5])[0])


def step(fn, b, h, t, d, dtype, device, mode):
    """(callable, tensors whose grads to reset): one forward, or one forward + backward."""
    q, k, v, do = (torch.randn((b, h, t, d), device=device, dtype=dtype) for _ in range(4))
    if mode == "fwd":
        def forward():
            with torch.no_grad():
                fn(q, k, v)
        return forward, ()
    q, k, v = (x.requires_grad_(True) for x in (q, k, v))
    return (lambda: fn(q, k, v).backward(do)), (q, k, v)


def time_point(fns, b, h, t, d, dtype, device, mode, repeats, gpu, clock="wall") -> dict[str, list[float]]:
    """Times of every variant at one point. GPU: do_bench per variant. CPU: one warm-up call each,
    then `repeats` rounds calling every variant once per round (A B A B ...), so machine drift
    hits all of them alike."""
    steps, out = {}, {}
    for name, fn in fns.items():
        try:
            steps[name] = step(fn, b, h, t, d, dtype, device, mode)
            if gpu:
                out[name] = [gpu_median_ms(steps[name][0], grad_to_none=list(steps[name][1]) or None)]
            else:
                call_ms(*steps[name], clock=clock)
        except Exception as exc:  # noqa: BLE001 - one failing variant must not stop the sweep
            if device == "cuda":
                torch.cuda.empty_cache()
            out[name] = exc
            steps.pop(name, None)
    if not gpu:
        times = {name: [] for name in steps}
        for _ in range(repeats):
            for name, (fn, grads) in steps.items():
                times[name].append(call_ms(fn, grads, clock=clock))
        out.update(times)
    return out


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages (other work on the machine while timing)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


# ------------------------------------------------------------------------------ main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--interpret-smoke", action="store_true",
                   help="tiny CPU run of the GPU code path under TRITON_INTERPRET=1 (no flex)")
    p.add_argument("--cpu", action="store_true", help="CPU: the torch path vs dense SDPA, float32")
    p.add_argument("--lengths", type=int, nargs="+", help="sequence lengths T")
    p.add_argument("--window", type=int, dest="windows", nargs="+", help="band half-width(s): |i - j| <= window")
    p.add_argument("--windows", type=int, nargs="+", dest="windows")
    p.add_argument("--heads", type=int)
    p.add_argument("--head-dim", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--threads", type=int, default=2, help="CPU threads (--cpu)")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="CPU timing: wall clock, or this process's CPU time (robust on a busy machine "
                        "with --threads 1)")
    p.add_argument("--repeats", type=int, help="timed rounds per point (CPU and smoke)")
    p.add_argument("--modes", nargs="+", choices=["fwd", "fwd_bwd"])
    p.add_argument("--variants", nargs="+", choices=VARIANTS)
    p.add_argument("--out", type=Path, help="write tidy rows + provenance (.json or .csv)")
    args = p.parse_args(argv)
    defaults = SMOKE_DEFAULTS if args.interpret_smoke else CPU_DEFAULTS if args.cpu else GPU_DEFAULTS
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    smoke, cpu = args.interpret_smoke, args.cpu and not args.interpret_smoke
    gpu = not (smoke or cpu)
    if gpu and not torch.cuda.is_available():
        print(f"{STUDY}: needs a CUDA GPU and none is available here. Run with --cpu for the CPU "
              "paths, or --interpret-smoke for a tiny CPU check of this script's code path.", file=sys.stderr)
        return 2
    if cpu:
        torch.set_num_threads(args.threads)
    device = "cuda" if gpu else "cpu"
    dtype = torch.float32 if cpu else torch.bfloat16
    dtype_name = str(dtype).removeprefix("torch.")
    b, h, d = args.batch, args.heads, args.head_dim
    run = new_run(STUDY, "smoke" if smoke else "cpu" if cpu else "gpu",
                  {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                  device=device, threads=args.threads if cpu else None)
    device_label = run["hardware"].get("gpu_name", run["hardware"]["cpu_model"])
    load_before = loadavg()

    # 1. correctness first, on a small odd shape with interior and edge blocks
    check_shape = (1, 2, 1031, 64, 200) if gpu else (1, 2, 70, 16, 9)
    banded = [n for n in args.variants if n != "sdpa"]
    failures = []
    for name in banded:
        fn, _ = make_variant(name, check_shape[-1], check_shape[2], device, smoke)
        failures += check_variant(name, fn, *check_shape, dtype, device)
    if failures:
        print(f"{STUDY}: correctness check FAILED, nothing timed:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    print(f"correctness vs float64 reference (B,H,T,D,window={check_shape}): ok for {', '.join(banded)}",
          flush=True)

    # 2. timing
    rows, ms, ratios = [], {}, {}
    for w in args.windows:
        for t in args.lengths:
            made = {n: make_variant(n, w, t, device, smoke) for n in args.variants}
            for mode in args.modes:
                factor = BWD_FACTOR if mode == "fwd_bwd" else 1.0
                band = SPEC.flops(b, h, t, d, window=w) * factor
                times = time_point({n: f for n, (f, _) in made.items()}, b, h, t, d, dtype, device, mode,
                                   args.repeats, gpu, args.clock)
                for name, (_, computed) in made.items():
                    got = times[name]
                    status = "ok" if isinstance(got, list) else (
                        "oom" if isinstance(got, torch.cuda.OutOfMemoryError)
                        else f"error: {type(got).__name__}: {(str(got).splitlines() or [''])[0][:200]}")
                    value = statistics.median(got) if status == "ok" else float("nan")
                    flops = computed(b, h, d) * factor    # after timing: the autotuner's blocks at this T
                    ms[(name, mode, w, t)] = value
                    point = dict(study=STUDY, variant=name, device=device_label, dtype=dtype_name, mode=mode,
                                 batch=b, heads=h, head_dim=d, window=w, length=t, status=status,
                                 repeats=len(got) if status == "ok" else 0)
                    rows.append({**point, "metric": "time_ms", "value": value,
                                 "q25": _quantile(got, 0.25), "q75": _quantile(got, 0.75)})
                    rows.append({**point, "metric": "tflops", "value": flops / (value * 1e-3) / 1e12,
                                 "flops": flops, "flops_counted": "computed blocks"})
                    rows.append({**point, "metric": "band_tflops", "value": band / (value * 1e-3) / 1e12,
                                 "flops": band, "flops_counted": "band" if name != "sdpa" else "band (of a dense run)"})
                    print(f"  w={w:4d} T={t:6d} {name:6s} {mode:7s} {value:9.3f} ms  "
                          f"{flops / (value * 1e-3) / 1e12:8.4f} TFLOP/s computed  {status}", flush=True)
                if ("sdpa", mode, w, t) in ms:
                    for name in banded:
                        ratios[(name, mode, w, t)] = ms[(name, mode, w, t)] / ms[("sdpa", mode, w, t)]
    load_after = loadavg()

    summary = summarize(args, ms)
    print()
    print(markdown_table(args, ms, ratios, b, h, d, dtype_name))
    print(f"\nload average (1, 5, 15 min) before: {load_before}; after: {load_after}")
    for (name, mode), ratio in summary["linearity"].items():
        print(f"linearity {name} {mode}: (ms/T at T={max(args.lengths)}) / "
              f"(ms/T at T={min(args.lengths)}) = {ratio:.2f}")
    record = {"benchmark": STUDY, "run_id": run["run_id"], "commit": run["commit"], "device": device_label,
              "dtype": dtype_name, "batch": b, "heads": h, "head_dim": d, "windows": args.windows,
              "threads": args.threads if cpu else None, "clock": "do_bench" if gpu else args.clock,
              "correct": True,
              "loadavg_before": load_before, "loadavg_after": load_after,
              "ms": {key(k, args.windows): v for k, v in ms.items()},
              "over_sdpa": {key(k, args.windows): r for k, r in ratios.items()},
              "band_over_dense": {f"{w}/{t}": band_pairs(t, w) / t**2 for w in args.windows for t in args.lengths},
              "speedup_vs_flex": {f"{m}/{w}/{t}": r for (m, w, t), r in summary["speedup_vs_flex"].items()},
              "linearity": {f"{n}/{m}": r for (n, m), r in summary["linearity"].items()}}
    if args.out:
        write_out(args.out, rows, run, record)
        print(f"wrote {args.out}")
    print(json.dumps(finite_or_none(record), default=str))
    return 0


def key(k, windows) -> str:
    """'name/mode/T', with the window ('name/mode/wW/T') when several are measured."""
    name, mode, w, t = k
    return f"{name}/{mode}/{t}" if len(windows) == 1 else f"{name}/{mode}/w{w}/{t}"


def _quantile(values, q):
    if not isinstance(values, list) or len(values) < 2:
        return float("nan")
    return statistics.quantiles(values, n=4)[0 if q == 0.25 else 2]


def summarize(args, ms):
    """speedup_vs_flex = flex ms / triton ms (> 1: our kernel is faster); linearity = time per token
    at the largest T over time per token at the smallest T (1.0 = perfectly linear), first window."""
    lo, hi, w0 = min(args.lengths), max(args.lengths), args.windows[0]
    speedup = {(m, w, t): ms[("flex", m, w, t)] / ms[("triton", m, w, t)]
               for m in args.modes for w in args.windows for t in args.lengths
               if ("flex", m, w, t) in ms and ("triton", m, w, t) in ms}
    linearity = {(n, m): (ms[(n, m, w0, hi)] / hi) / (ms[(n, m, w0, lo)] / lo)
                 for n in args.variants for m in args.modes if n != "sdpa" and (n, m, w0, lo) in ms}
    return {"speedup_vs_flex": speedup, "linearity": linearity}


def markdown_table(args, ms, ratios, b, h, d, dtype_name):
    names = args.variants
    banded = [n for n in names if n != "sdpa"]
    head = ["window", "T", "mode"] + [f"{n} ms" for n in names] + [f"{n}/sdpa" for n in banded if "sdpa" in names]
    head += ["band/dense (analytic)"]
    if "flex" in names and "triton" in names:
        head.append("flex/triton (speedup)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for w in args.windows:
        for t in args.lengths:
            for m in args.modes:
                cells = [str(w), str(t), m] + [f"{ms[(n, m, w, t)]:.3f}" for n in names]
                cells += [f"{ratios[(n, m, w, t)]:.3f}" for n in banded if (n, m, w, t) in ratios]
                cells.append(f"{band_pairs(t, w) / t**2:.3f}")
                if "flex" in names and "triton" in names:
                    cells.append(f"{ms[('flex', m, w, t)] / ms[('triton', m, w, t)]:.2f}")
                lines.append("| " + " | ".join(cells) + " |")
    note = (f"B={b}, H={h}, D={d}, band |i-j|<=window, {dtype_name}; ms = median; x/sdpa = time "
            f"ratio against dense SDPA; band/dense = band pairs / T^2, the FLOP ratio")
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
