"""Block-sparse attention (effx.attention.block_sparse) with both softmax semantics, every path.

The PyTorch and torch.sparse CSR paths run here, forward and gradients, against the float64 dense
emulations through effx.testing.compare_paths (the one tolerance rule), on odd sizes (T = 63, 100;
D = 60, 24; block 16). The Triton kernel's checks run in a subprocess under TRITON_INTERPRET=1
(tests/kernel_checks/check_block_sparse.py; the interpreter must be chosen before triton is first
imported), each reported as its own test. The benchmark's smoke mode and no-GPU message too.
Uneven layouts (BigBird's global block, SPION-like) check that the torch path's work follows the
listed blocks (counted FLOPs); the layout cache is checked for hits and misses; the CSR index and
the CSR backward are checked for intermediates larger than O(nnz).
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path

import pytest
import torch

from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from effx.attention import ATTENTION
from effx.attention import block_sparse as bs
from effx.attention.block_sparse_csr import block_sparse_attention_csr, element_csr
from effx.attention.block_sparse_torch import block_sparse_attention_torch, plan_buckets
from effx.attention.reference import attention_reference, block_layout_mask
from effx.errors import ParameterError
from effx.profiling.flops import count_flops
from effx.spion.baselines import bigbird_layout
from effx.testing import compare_paths
from kernel_checks.pytest_side import interpreter_tests, run_script  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CHECKER = REPO / "tests" / "kernel_checks" / "check_block_sparse.py"
BENCHMARK = REPO / "benchmarks" / "block_sparse_kernel.py"
REFERENCES = {"standard": attention_reference, "faithful": bs.faithful_reference}
CPU_PATHS = ["torch", "csr"]


def rand(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) for _ in range(4)]                 # q, k, v, grad_out


def random_layout(nb, heads=None, seed=0, p=0.35):
    shape = (nb, nb) if heads is None else (heads, nb, nb)
    return (torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < p) | torch.eye(nb, dtype=torch.bool)


def padding(b, t, cut, seed=0):
    kpm = torch.rand((b, t), generator=torch.Generator().manual_seed(seed)) > 0.15
    kpm[-1, t - cut:] = False
    return kpm


def uneven_layout(nb, heads=None, seed=0):
    """BigBird-like: a band, a global first block row and column, a few random blocks; per head,
    head 1 also has an empty row and a full last row."""
    lay = bigbird_layout(nb, 0.3, seed=seed)
    if heads is None:
        return lay
    lay = torch.stack([bigbird_layout(nb, 0.3, seed=seed + i) for i in range(heads)])
    lay[1, 2], lay[1, -1] = False, True
    return lay


def assert_rule(backend, layout, block, shape, seed, softmax="standard", kpm=None, scale=None, mask=None,
                reference=None):
    """compare_paths: the path in fp32 vs plain dense fp32 vs float64, for out, dq, dk, dv.
    backend: a name for the public call, or a function (q, k, v, **kwargs) such as one path."""
    q, k, v, grad_out = rand(shape, seed)
    t = shape[2]
    if mask is None:
        mask = block_layout_mask(layout, block, t)
        mask = mask[None] if mask.dim() == 3 else mask
    dense = reference or REFERENCES[softmax]

    def path(q, k, v):
        if callable(backend):
            return backend(q, k, v, layout=layout, block=block, key_padding_mask=kpm, scale=scale, softmax=softmax)
        return bs.block_sparse_attention(q, k, v, layout=layout, block=block, key_padding_mask=kpm, scale=scale,
                                         softmax=softmax, backend=backend)

    verdicts = compare_paths(path, lambda q, k, v: dense(q, k, v, mask=mask, key_padding_mask=kpm, scale=scale,
                                                         upcast=False),
                             lambda q, k, v: dense(q, k, v, mask=mask, key_padding_mask=kpm, scale=scale),
                             q, k, v, grad_out)
    assert all(v.ok for v in verdicts), "\n".join(map(str, verdicts))


# ------------------------------------------------------------------------------ CPU paths

@pytest.mark.parametrize("softmax", bs.SOFTMAX)
@pytest.mark.parametrize("backend", CPU_PATHS)
def test_all_ones_layout_equals_dense(backend, softmax):
    # no unselected key: both semantics are plain dense attention (T=63, D=60, block 16)
    assert_rule(backend, torch.ones(4, 4, dtype=torch.bool), 16, (2, 2, 63, 60), 1, softmax=softmax,
                mask=torch.ones(63, 63, dtype=torch.bool), reference=attention_reference)


@pytest.mark.parametrize("backend", CPU_PATHS)
def test_band_layout_equals_its_element_mask(backend):
    assert_rule(backend, bs.band_layout(7, 1), 16, (2, 2, 100, 24), 2)


@pytest.mark.parametrize("softmax", bs.SOFTMAX)
@pytest.mark.parametrize("backend", CPU_PATHS)
def test_random_layouts_with_key_padding(backend, softmax):
    assert_rule(backend, random_layout(7, seed=3), 16, (2, 2, 100, 24), 3, softmax=softmax,
                kpm=padding(2, 100, 30, seed=3))
    assert_rule(backend, random_layout(7, heads=2, seed=4), 16, (2, 2, 100, 24), 4, softmax=softmax,
                kpm=padding(2, 100, 12, seed=4), scale=0.3)


@pytest.mark.parametrize("softmax", bs.SOFTMAX)
@pytest.mark.parametrize("backend", CPU_PATHS)
def test_rows_without_a_selected_key_give_zeros(backend, softmax):
    layout = random_layout(4, seed=5)
    layout[1] = False                                         # query block 1 lists nothing
    layout[3] = False
    layout[3, 3] = True                                       # block 3 sees only padded keys of item 1
    kpm = torch.ones(2, 63, dtype=torch.bool)
    kpm[1, 48:] = False
    q, k, v, _ = rand((2, 2, 63, 24), 5)
    out = bs.block_sparse_attention(q, k, v, layout=layout, block=16, key_padding_mask=kpm, softmax=softmax,
                                    backend=backend)
    assert out[:, :, 16:32].abs().max() == 0 and out[1, :, 48:].abs().max() == 0
    assert_rule(backend, layout, 16, (2, 2, 63, 24), 5, softmax=softmax, kpm=kpm)


@pytest.mark.parametrize("softmax", bs.SOFTMAX)
@pytest.mark.parametrize("backend", CPU_PATHS)
def test_uneven_layouts_with_key_padding(backend, softmax):
    # a global row (lists every block) beside short rows: several buckets on the torch path
    shared, per_head = uneven_layout(9), uneven_layout(9, heads=3, seed=5)
    assert len(plan_buckets(shared).buckets) > 1 and plan_buckets(per_head).empty.numel() == 1
    assert_rule(backend, shared, 16, (3, 2, 137, 20), 11, softmax=softmax, kpm=padding(3, 137, 40, seed=11))
    assert_rule(backend, per_head, 16, (2, 3, 140, 12), 12, softmax=softmax, kpm=padding(2, 140, 25, seed=12),
                scale=0.4)


@pytest.mark.parametrize("softmax", bs.SOFTMAX)
def test_torch_path_in_batch_chunks_equals_the_reference(softmax):
    # chunk_bytes=1: one batch item per chunk, every bucket run per chunk
    def one_item_chunks(q, k, v, **kw):
        return block_sparse_attention_torch(q, k, v, chunk_bytes=1, **kw)
    assert_rule(one_item_chunks, uneven_layout(8, heads=2, seed=3), 8, (3, 2, 61, 12), 13, softmax=softmax,
                kpm=padding(3, 61, 20, seed=13))


def test_torch_path_work_follows_the_listed_blocks():
    """BigBird's global block row lists all 16 blocks, the others 3 or 4: padding every row to 16
    would compute 256 tiles; the buckets compute the 74 listed tiles plus 2 of padding."""
    layout = bigbird_layout(16, 0.01)                          # band 1 + global block, no random block
    listed = int(layout.sum())
    b, h, t, d, block = 2, 2, 16 * 8, 4, 8
    q, k, v = (torch.randn(b, h, t, d, requires_grad=True) for _ in range(3))
    outs = []
    forward, per_op = count_flops(lambda: outs.append(bs.block_sparse_attention(q, k, v, layout=layout,
                                                                                block=block, backend="torch")))
    tiles = forward / (4 * b * h * block * block * d)
    assert listed == 74 and listed <= tiles <= 1.05 * listed, per_op
    backward, _ = count_flops(lambda: outs[0].sum().backward())
    assert backward == 2 * forward


@pytest.mark.parametrize("layout", [uneven_layout(7), uneven_layout(7, heads=3, seed=2), torch.zeros(7, 7, dtype=torch.bool)],
                         ids=["bigbird", "per-head", "empty"])
def test_counted_flops_equal_the_spec_for_uneven_layouts(layout):
    spec = ATTENTION["block_sparse"]
    b, h, t, d = 2, 3, 100, 12
    q, k, v = (torch.randn(b, h, t, d, requires_grad=True) for _ in range(3))
    kwargs = spec.call_options(t, block=16, layout=layout, backend="torch")
    outs = []
    forward, per_op = count_flops(lambda: outs.append(spec.fn(q, k, v, **kwargs)))
    assert forward == spec.flops(b, h, t, d, block=16, layout=layout), per_op
    backward, _ = count_flops(lambda: outs[0].sum().backward())
    assert backward == spec.backward_flops(b, h, t, d, block=16, layout=layout)


# ------------------------------------------------------------------------------ layout cache

def test_layout_cache_hits_the_same_layout_and_misses_a_changed_one():
    cache = bs.LAYOUT_CACHE
    cache.clear()
    q, k, v, _ = rand((2, 2, 63, 24), 14)
    layout = random_layout(4, seed=14)

    def run(lay):
        return bs.block_sparse_attention(q, k, v, layout=lay, block=16, backend="torch")

    def expected(lay):
        return attention_reference(q.double(), k.double(), v.double(), mask=block_layout_mask(lay, 16, 63))

    hits, misses = cache.hits, cache.misses
    first, again = run(layout), run(layout)
    assert (cache.hits - hits, cache.misses - misses) == (1, 1) and torch.equal(first, again)
    layout[0, 3] = ~layout[0, 3]                                  # in place: the version counter moves
    changed = run(layout)
    assert (cache.hits - hits, cache.misses - misses) == (1, 2)
    torch.testing.assert_close(changed.double(), expected(layout), atol=1e-5, rtol=1e-5)
    run(layout[:, :])                                             # another tensor object (a view): a miss
    assert cache.misses - misses == 3
    other = layout.clone()
    other[2, 0] = ~other[2, 0]
    del layout                                                    # its entries go with it
    assert all(entry[0]() is not None for entry in cache._entries.values())
    torch.testing.assert_close(run(other).double(), expected(other), atol=1e-5, rtol=1e-5)
    assert cache.misses - misses == 4


def test_layout_cache_keeps_a_block_index_per_layout_and_block():
    pytest.importorskip("triton")
    from effx.kernels.block_sparse_triton import block_index
    cache = bs.LayoutCache(size=2)
    layout = random_layout(4, heads=2, seed=15)
    first = cache.get(layout, ("triton", 16), lambda: block_index(layout.clone(), 16))
    assert cache.get(layout, ("triton", 16), lambda: block_index(layout.clone(), 16)) is first
    assert cache.get(layout, ("triton", 32), lambda: block_index(layout.clone(), 32)) is not first
    layout.logical_not_()
    rebuilt = cache.get(layout, ("triton", 16), lambda: block_index(layout.clone(), 16))
    assert rebuilt is not first and torch.equal(rebuilt.layout, layout)
    assert (cache.hits, cache.misses) == (1, 3) and len(cache._entries) == 2      # oldest entry out


def test_faithful_differs_from_standard_by_the_zero_logits():
    q, k, v, _ = rand((1, 2, 63, 24), 6)
    layout = bs.band_layout(4, 0)
    kw = dict(layout=layout, block=16, backend="torch")
    std = bs.block_sparse_attention(q, k, v, softmax="standard", **kw)
    faith = bs.block_sparse_attention(q, k, v, softmax="faithful", **kw)
    # each row of the faithful weights sums to Z_sel / (Z_sel + N - nnz) < 1: outputs shrink
    assert (faith - std).abs().max() > 1e-2
    q64, k64 = q.double(), k.double()
    scores = (q64 @ k64.transpose(-1, -2)) / math.sqrt(24)
    mask = block_layout_mask(layout, 16, 63)
    z_sel = scores.exp().masked_fill(~mask, 0).sum(-1, keepdim=True)
    nnz = mask.sum(-1, keepdim=True)
    shrink = z_sel / (z_sel + (63 - nnz))                     # by hand: N = T = 63 without padding
    torch.testing.assert_close(faith.double(), std.double() * shrink, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", CPU_PATHS)
def test_faithful_counts_only_real_keys(backend):
    # N_b = real keys: appending padded keys (a selected block of them) must not change real rows
    q, k, v, _ = rand((1, 2, 64, 24), 7)
    small = random_layout(4, seed=7)
    big = torch.zeros(5, 5, dtype=torch.bool)
    big[:4, :4] = small
    big[:, 4] = True                                          # the padded block is even listed
    big[4, 4] = True
    extra = [torch.cat([x, torch.randn(1, 2, 16, 24)], dim=2) for x in (q, k, v)]
    kpm = torch.zeros(1, 80, dtype=torch.bool)
    kpm[:, :64] = True
    a = bs.block_sparse_attention(q, k, v, layout=small, block=16, softmax="faithful", backend=backend)
    b = bs.block_sparse_attention(*extra, layout=big, block=16, key_padding_mask=kpm, softmax="faithful",
                                  backend=backend)
    torch.testing.assert_close(b[:, :, :64], a, atol=1e-6, rtol=1e-6)


def test_csr_path_refuses_half_precision_and_auto_uses_torch_on_cpu():
    q, k, v, _ = rand((1, 1, 32, 16), 8)
    with pytest.raises(ParameterError, match="float32 or float64"):
        bs.block_sparse_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), layout=torch.ones(2, 2, dtype=torch.bool),
                                  block=16, backend="csr")
    assert bs.choose_backend(q, 16, "auto") == "torch"


def test_element_csr_index_by_hand():
    from effx.attention.block_sparse_csr import element_csr
    # T=3, block 2 (nb=2), layout [[1,0],[1,1]], key 2 padded: rows 0,1 -> keys {0,1}; row 2 -> {0,1}
    crow, col = element_csr(torch.tensor([[True, False], [True, True]]), 2, 1, 1, 3,
                            torch.tensor([[True, True, False]]))
    assert crow.tolist() == [0, 2, 4, 6] and col.tolist() == [0, 1, 0, 1, 0, 1]


@pytest.mark.parametrize("heads, kpm", [(1, False), (3, False), (1, True), (3, True)])
def test_element_csr_equals_the_dense_mask_index(heads, kpm):
    b, h, t, block = 2, 3, 45, 8                              # T not a multiple of the block
    layout = random_layout(6, heads=None if heads == 1 else heads, seed=16)
    layout[..., 1, :] = False                                 # an empty query block
    mask = padding(b, t, 9, seed=16) if kpm else None
    dense = block_layout_mask(layout[None] if heads == 1 else layout, block, t).expand(b, h, t, t)
    if mask is not None:
        dense = dense & mask[:, None, None, :]
    row, col = dense.reshape(b * h * t, t).nonzero(as_tuple=True)
    crow, got = element_csr(layout, block, b, h, t, mask)
    assert torch.equal(crow, torch.nn.functional.pad(torch.bincount(row, minlength=b * h * t).cumsum(0), (1, 0)))
    assert torch.equal(got, col + (row // t) * t)


class LargestTensor(TorchDispatchMode):
    """Records the largest storage (bytes) any operator returns while active."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for x in tree_flatten(out)[0]:
            if isinstance(x, torch.Tensor) and x.layout == torch.strided:
                self.largest = max(self.largest, x.untyped_storage().nbytes())
        return out


def test_csr_index_and_backward_stay_within_o_nnz():
    """No (T, T) mask while the index is built, no dense (B*H*T)^2 gradient in the backward:
    one diagonal block per query block at T = 2048 (a (B, H, T, T) bool mask: 8x the index)."""
    b, h, t, block = 1, 2, 2048, 32
    layout = torch.eye(t // block, dtype=torch.bool)
    with LargestTensor() as seen:
        crow, col = element_csr(layout, block, b, h, t)
    index_bytes = col.numel() * col.element_size()
    assert col.numel() == b * h * t * block and b * h * t * t == 8 * index_bytes
    assert seen.largest <= index_bytes, f"{seen.largest} bytes while building an index of {index_bytes}"
    q, k, v = (torch.randn(b, h, t, 16, requires_grad=True) for _ in range(3))
    out = block_sparse_attention_csr(q, k, v, layout=layout, block=block, softmax="faithful")
    with LargestTensor() as seen:
        out.sum().backward()
    assert seen.largest <= 2 * index_bytes, f"{seen.largest} bytes in the backward, index {index_bytes}"
    assert all(torch.isfinite(x.grad).all() for x in (q, k, v))


def test_bad_arguments_name_the_parameter():
    q, k, v, _ = rand((1, 2, 40, 8), 9)
    lay = torch.ones(3, 3, dtype=torch.bool)
    for kwargs, name in [(dict(softmax="sparse"), "softmax"), (dict(backend="cuda-magic"), "backend"),
                         (dict(layout=torch.ones(4, 4, dtype=torch.bool)), "layout"),
                         (dict(layout=torch.ones(3, 3, 3, dtype=torch.bool)), "layout"),
                         (dict(key_padding_mask=torch.ones(2, 40, dtype=torch.bool)), "key_padding_mask")]:
        with pytest.raises(ParameterError, match=name):
            bs.block_sparse_attention(q, k, v, **{"layout": lay, "block": 16, **kwargs})


def test_block_index_of_a_layout():
    pytest.importorskip("triton")
    from effx.kernels.block_sparse_triton import block_index
    layout = torch.tensor([[[1, 0, 1], [0, 1, 0], [1, 1, 1]],
                           [[1, 0, 0], [0, 0, 0], [0, 1, 1]]], dtype=torch.bool)
    index = block_index(layout, 16)
    # rows g*nb + r; head 0 lists {0,2}, {1}, {0,1,2}; head 1 lists {0}, {}, {1,2}
    assert index.row_ptr.tolist() == [0, 2, 3, 6, 7, 7, 9]
    assert index.col_idx.tolist() == [0, 2, 1, 0, 1, 2, 0, 1, 2]
    # transposed: head 0 key block 0 is listed by {0,2}, 1 by {1,2}, 2 by {0,2}; head 1: {0}, {2}, {2}
    assert index.col_ptr.tolist() == [0, 2, 4, 6, 7, 8, 9]
    assert index.row_idx.tolist() == [0, 2, 1, 2, 0, 2, 0, 2, 2]
    assert index.row_ptr.dtype == torch.int32 and index.nnz_blocks == 9


# ------------------------------------------------------------------------------ Triton kernel (interpreter)

CHECK_NAMES = [
    "all_ones_layout_equals_dense",
    "band_layout_equals_element_mask",
    "per_head_layout_key_padding_standard",
    "faithful_matches_emulation",
    "empty_rows_give_zeros",
    "padded_keys_never_leak",
    "sub_tiles_block32",
    "custom_scale_and_non_contiguous",
    "bf16_forward_and_grads",
    "fp16_forward_and_grads",
    "prebuilt_block_index",
    "public_dispatch_backend_triton",
]


checker, test_kernel_under_interpreter, test_checker_reports_exactly_the_listed_checks = \
    interpreter_tests(CHECKER, CHECK_NAMES)


def test_kernel_module_imports():
    """The kernel imports (and compiles its decorators) without the interpreter, as on a GPU machine."""
    pytest.importorskip("triton")
    assert bs.HAS_TRITON_KERNEL, "effx.kernels.block_sparse_triton failed to import"


# ------------------------------------------------------------------------------ benchmark

def test_benchmark_smoke_under_interpreter(tmp_path):
    """The GPU benchmark's code path (layout, correctness first, timing, table, JSON, --out) on CPU."""
    pytest.importorskip("triton")
    out = tmp_path / "bench.json"
    proc = run_script([BENCHMARK, "--smoke", "--out", out])
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["benchmark"] == "block_sparse_kernel" and summary["correct"]["triton"]
    assert 0 < summary["density"] < 1 and summary["nnz_blocks"] > 0
    assert {"triton/fwd/float32/16", "triton/fwd_bwd/bfloat16/16", "sdpa/fwd/float32/16"} <= set(summary["ms"])
    saved = json.loads(out.read_text())
    assert saved["run"]["commit"] and saved["rows"]
    assert {r["metric"] for r in saved["rows"]} == {"time_ms", "tflops"}
    assert "| variant | dtype | D | mode |" in proc.stdout


def load_benchmark():
    spec = importlib.util.spec_from_file_location("block_sparse_kernel_bench", BENCHMARK)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)                 # no --smoke in argv: env untouched
    return bench


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_benchmark_without_gpu_exits_clearly(capsys):
    assert load_benchmark().main([]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_benchmark_arguments():
    bench = load_benchmark()
    args = bench.parse_args(["--head-dims", "64", "--dtypes", "bfloat16", "--block", "32"])
    assert args.head_dims == [64] and args.dtypes == ["bfloat16"] and args.block == 32 and args.length == 4096
    assert bench.parse_args(["--smoke"]).length < 512
    with pytest.raises(SystemExit):
        bench.parse_args(["--dtypes", "float8"])
    assert bench.block_flops(2, 3, 10, 16, 32, "fwd_bwd") == 3.5 * 4 * 2 * 3 * 10 * 16 * 16 * 32


# ------------------------------------------------------------------------------ compiled kernel (GPU)

@pytest.mark.skipif(not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1",
                    reason="needs a CUDA GPU (compiled kernel)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("softmax", bs.SOFTMAX)
@pytest.mark.parametrize("t, d, block", [(1031, 64, 64), (257, 128, 32), (100, 24, 16)])
def test_compiled_kernel_on_gpu(dtype, softmax, t, d, block):
    nb = math.ceil(t / block)
    layout = random_layout(nb, heads=3, seed=t).cuda()
    kpm = torch.ones((2, t), dtype=torch.bool, device="cuda")
    kpm[1, t - t // 4:] = False
    q, k, v, grad_out = (x.to("cuda", dtype) for x in rand((2, 3, t, d), t + d))
    mask = block_layout_mask(layout, block, t)[None]
    dense = REFERENCES[softmax]
    verdicts = compare_paths(
        lambda q, k, v: bs.block_sparse_attention(q, k, v, layout=layout, block=block, key_padding_mask=kpm,
                                                  softmax=softmax, backend="triton"),
        lambda q, k, v: dense(q, k, v, mask=mask, key_padding_mask=kpm, upcast=False),
        lambda q, k, v: dense(q, k, v, mask=mask, key_padding_mask=kpm), q, k, v, grad_out)
    assert all(v.ok for v in verdicts), "\n".join(map(str, verdicts))
