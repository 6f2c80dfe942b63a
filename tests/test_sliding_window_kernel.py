"""The Triton sliding-window kernel (effx/kernels/sliding_window_triton.py), tested on CPU.

Triton kernels run on CPU tensors only under TRITON_INTERPRET=1, which must be set before triton is
first imported; other test modules in this pytest process may already have imported it. So the
kernel checks live in `kernel_checks/check_sliding_window.py`, run once in a subprocess with the
interpreter on; each of its checks is reported here as its own test (readable ids and messages).
The dispatch switch of the public function, the kernel's tile arithmetic and the benchmark's smoke
mode are tested here too; on a GPU, the compiled kernel is held to effx's one tolerance rule.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

pytest.importorskip("triton")

from effx.attention import sliding_window as sw  # noqa: E402
from effx.kernels import sliding_window_triton as kernel  # noqa: E402
from kernel_checks.pytest_side import interpreter_tests, run_script  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CHECKER = REPO / "tests" / "kernel_checks" / "check_sliding_window.py"
BENCHMARK = REPO / "benchmarks" / "sliding_window_kernel.py"

# the checks the checker must report (its CHECKS registry); one test id each
CHECK_NAMES = [
    "forward_band_fp32",
    "window_ge_T_equals_dense",
    "window_zero_returns_v",
    "key_padding",
    "grads_fp32_band",
    "grads_fp32_padding_odd_T",
    "grads_fp32_dense_and_window0",
    "custom_scale_and_odd_head_dim",
    "large_head_dims_forward",
    "non_contiguous_inputs",
    "bf16_forward_and_grads",
    "fp16_forward_and_grads",
    "public_dispatch_backend_triton",
    "flops_counted_equal_spec",
]


checker, test_kernel_under_interpreter, test_checker_reports_exactly_the_listed_checks = \
    interpreter_tests(CHECKER, CHECK_NAMES)


def test_kernel_module_imports():
    """The kernel imports (and compiles its decorators) without the interpreter, as on a GPU machine."""
    assert sw.HAS_TRITON_KERNEL, "effx.kernels.sliding_window_triton failed to import"


class PathLog(TorchDispatchMode):
    """Records the path argument of every effx::sliding_window_forward call (observes only)."""

    def __init__(self):
        super().__init__()
        self.paths = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "effx" and func.__name__.startswith("sliding_window_forward"):
            self.paths.append(args[-1])
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("backend, path", [("torch", "torch"), ("auto", "torch")])
def test_cpu_calls_take_the_torch_path(backend, path):
    """On CPU tensors 'auto' and 'torch' run the torch path (the 'triton' path on CPU tensors,
    under the interpreter, is the checker's `public_dispatch_backend_triton`)."""
    q = k = v = torch.randn(1, 2, 9, 16)
    assert sw.resolve_backend(backend, q) == path
    with PathLog() as log:
        sw.sliding_window_attention(q, k, v, window=3, backend=backend)
    assert log.paths == [path]


def test_auto_picks_the_kernel_for_cuda_tensors_only():
    other = torch.empty(1, device="meta")                # not a CUDA tensor: the torch path
    assert sw.resolve_backend("auto", other) == "torch"
    assert sw.resolve_backend("triton", other) == "triton"
    with pytest.raises(ValueError, match="backend"):
        sw.resolve_backend("cuda-magic", other)


@pytest.mark.parametrize("t, window", [(1, 0), (63, 5), (100, 17), (130, 40), (45, 200), (64, 0)],
                         ids=lambda x: str(x))
def test_tile_pairs_cover_the_band(t, window):
    """The kernel's visited tiles contain the band; with 1 x 1 tiles they are exactly the band."""
    assert kernel.tile_pairs(t, window, 1, 1) == sw.band_pairs(t, window)
    for bm, bn in [(32, 16), (16, 32), (128, 64)]:
        assert kernel.tile_pairs(t, window, bm, bn) >= sw.band_pairs(t, window)


def test_autotune_key_includes_the_length():
    """A config tuned at one T must not be reused at another."""
    for fn in (kernel._fwd_kernel, kernel._bwd_dkdv_kernel, kernel._bwd_dq_kernel):
        assert "T" in fn.keys


@pytest.mark.parametrize("autotune, n", [("1", 4), ("0", 1)])
def test_autotuning_can_be_switched_off_for_checks(autotune, n):
    """EFFX_TRITON_AUTOTUNE=0 (the GPU session's kernel checks): one configuration per kernel."""
    code = ("import effx.kernels.sliding_window_triton as k; "
            "print([len(c) for c in (k.FWD_CONFIGS, k.DKDV_CONFIGS, k.DQ_CONFIGS)])")
    env = {**os.environ, "EFFX_TRITON_AUTOTUNE": autotune, "TRITON_INTERPRET": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == str([n] * 3)


def test_benchmark_interpret_smoke(tmp_path):
    """The GPU benchmark's code path (correctness check, timing, table, JSON, --out) runs on CPU."""
    out = tmp_path / "bench.json"
    proc = run_script([BENCHMARK, "--interpret-smoke", "--lengths", "40", "72", "--out", out])
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["correct"] and summary["benchmark"] == "sliding_window_kernel"
    assert {"triton/fwd/40", "triton/fwd_bwd/72"} <= set(summary["ms"])
    assert set(summary["linearity"]) == {"triton/fwd", "triton/fwd_bwd"}
    saved = json.loads(out.read_text())
    assert saved["run"]["commit"] and saved["rows"]
    assert {r["metric"] for r in saved["rows"]} == {"time_ms", "tflops", "band_tflops"}
    assert "| T | mode |" in proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_benchmark_without_gpu_exits_clearly(capsys):
    spec = importlib.util.spec_from_file_location("sliding_window_kernel_bench", BENCHMARK)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)                 # no --interpret-smoke in argv: env untouched
    assert bench.main([]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1",
                    reason="needs a CUDA GPU (compiled kernel)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("t, d, window", [(257, 64, 37), (1031, 128, 300), (100, 32, 0), (63, 16, 500)])
def test_compiled_kernel_on_gpu(dtype, t, d, window):
    """On a GPU, both paths (kernel and torch) with key padding: effx's tolerance rule for the
    output and every gradient, against the float64 reference."""
    from effx.attention.reference import attention_reference, sliding_window_mask
    from effx.testing import compare_paths
    gen = torch.Generator().manual_seed(t + d + window)
    q, k, v, do = (torch.randn((2, 3, t, d), generator=gen).to("cuda", dtype) for _ in range(4))
    kpm = torch.ones((2, t), dtype=torch.bool, device="cuda")
    kpm[1, t - t // 4:] = False
    mask = sliding_window_mask(t, window, device="cuda")

    def reference(upcast):
        return lambda *x: attention_reference(*x, mask=mask, key_padding_mask=kpm, upcast=upcast)

    for backend in ("triton", "torch"):
        fn = lambda *x: sw.sliding_window_attention(*x, window=window, key_padding_mask=kpm,  # noqa: E731
                                                    backend=backend)
        verdicts = compare_paths(fn, reference(False), reference(True), q, k, v, do)
        assert all(x.ok for x in verdicts), f"{backend}: " + "; ".join(map(str, verdicts))
