"""Block-sparse attention in Triton, forward and backward, visiting only the listed blocks.

The FlashAttention-2 recipe (Dao, 2023) on a block layout, as SPION (Yoon, Han, Moon, arXiv
2309.12578) and BigBird use: query block r attends to the key blocks c with layout[r, c] True.
Shapes: q, k, v, out (B, H, T, D); layout bool (nb, nb) shared by heads or (H, nb, nb),
nb = ceil(T / block); key_padding_mask (B, T) bool, True = real key. block: a power of two,
16..256; programs work on tiles of BLOCK_M queries and BLOCK_N keys (powers of two <= block, so a
layout block is one or several tiles; ``default_tiles`` picks them from block, D and dtype).

Block index (``BlockIndex``, built once per layout): a CSR of the layout (for each layout head and
query block, the sorted list of its key blocks) and a CSR of the transposed layout (for each key
block, the query blocks that list it), int32.

Forward (`_fwd_kernel`): one program per (BLOCK_M query rows, batch*head); loops over the listed key
blocks of their query block only, BLOCK_N keys at a time. Online softmax in base 2 with fp32
accumulators; each row stores its log-sum-exp (base 2, of the scaled scores) for the backward.
Two softmax semantics:
  standard  masked softmax; a row with no selected key outputs zeros (lse = 0).
  faithful  SPION's official kernel: every unselected real key is a logit 0 in the denominator
            (``phantom`` = N_b - nnz_i of them per row, N_b = real keys of the batch item; padded
            keys never count). The running max starts at 0 when phantom > 0, so the zero logits are
            inside the max, and phantom * 2^(-m) joins the sum at the end; lse includes them.
Backward: delta = rowsum(dO * O) (fp32, in PyTorch); with P recomputed from lse the gradient
formulas are the same for both semantics (the zero logits are constants):
  `_bwd_dkdv_kernel`: one program per BLOCK_N keys; loops over the query blocks that list their
                      key block (the transposed CSR), BLOCK_M rows at a time, accumulating dK, dV;
  `_bwd_dq_kernel`:   one program per BLOCK_M queries; loops over their listed key blocks.
No atomics: every output row is written by exactly one program.

fp32 inputs use exact ("ieee") dots, as the tolerance rule compares with full-fp32 PyTorch (no
TF32); bf16/fp16 use tensor cores with fp32 accumulation.
Under TRITON_INTERPRET=1 the kernels run on CPU tensors (slow; used by the tests); their dots are
then computed in float64 and rounded to fp32 (``_mma`` says why).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

LOG2E = 1.4426950408889634  # log2(e): softmax in base 2 uses exp2
MAX_HEAD_DIM = 256
BLOCKS = (16, 32, 64, 128, 256)
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def kernel_supports(block: int, head_dim: int, dtype: torch.dtype) -> bool:
    """Whether the kernel runs this block size, head dim and dtype (else use the PyTorch path)."""
    return block in BLOCKS and 1 <= head_dim <= MAX_HEAD_DIM and dtype in DTYPES


# ---------------------------------------------------------------------------------------------
# Block index
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BlockIndex:
    """A layout as two CSRs (int32), built once per layout; row r of layout head g is g * nb + r."""
    block: int
    layout: torch.Tensor        # bool (H_l, nb, nb), H_l = 1 (shared) or H
    row_ptr: torch.Tensor       # (H_l * nb + 1,): key blocks of row g*nb + r are col_idx[row_ptr[.]: row_ptr[.+1]]
    col_idx: torch.Tensor       # (nnz,)
    col_ptr: torch.Tensor       # (H_l * nb + 1,): the transposed layout's CSR
    row_idx: torch.Tensor       # (nnz,)

    @property
    def num_blocks(self) -> int:
        return self.layout.shape[-1]

    @property
    def layout_heads(self) -> int:
        return self.layout.shape[0]

    @property
    def nnz_blocks(self) -> int:
        return int(self.col_idx.numel())


def _csr(m: torch.Tensor):
    """bool (G, nb, nb) -> (ptr (G*nb + 1,), idx (nnz,)) int32, columns sorted within each row."""
    ptr = F.pad(m.sum(-1).flatten().cumsum(0), (1, 0)).to(torch.int32)
    idx = m.nonzero()[:, 2].to(torch.int32)                                 # lexicographic: sorted
    return ptr.contiguous(), idx.contiguous()


def block_index(layout: torch.Tensor, block: int) -> BlockIndex:
    """BlockIndex of a bool layout (nb, nb) or (H_l, nb, nb) with tiles of ``block`` elements."""
    lay = layout.bool()
    lay = lay[None] if lay.dim() == 2 else lay                              # (H_l, nb, nb)
    row_ptr, col_idx = _csr(lay)
    col_ptr, row_idx = _csr(lay.transpose(1, 2))
    return BlockIndex(block, lay, row_ptr, col_idx, col_ptr, row_idx)


def _phantom_counts(index: BlockIndex, b: int, h: int, t: int, kpm) -> torch.Tensor:
    """Faithful mode: per (batch*head, query block), real keys outside the listed blocks. fp32 (B*H, nb)."""
    nb, block = index.num_blocks, index.block
    if kpm is None:
        real = torch.full((1, nb), float(block), device=index.layout.device)
        real[:, -1] = t - (nb - 1) * block                                  # (1, nb) keys per block
    else:
        real = F.pad(kpm.float(), (0, nb * block - t)).view(b, nb, block).sum(-1)   # (B, nb)
    selected = torch.einsum("hrc,bc->bhr", index.layout.float(), real)      # (B|1, H_l, nb)
    return (real.sum(-1)[:, None, None] - selected).expand(b, h, nb).reshape(b * h, nb).contiguous()


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------

@triton.jit
def _mma(a, b, INPUT_PRECISION: tl.constexpr, DOT_FP64: tl.constexpr):
    """a @ b with fp32 accumulation (an fp32 result).

    DOT_FP64 (only under the interpreter) computes the dot in float64 and rounds it to fp32. The
    interpreter's dot is numpy's matmul, whose fp32 rounding depends on the operands' orientation:
    the backward's q k^T would then differ in its last bits from the forward's, and P rebuilt from
    the saved lse would not be the forward's P. A GPU dot sums every element over D in the same
    chunks whatever the orientation; rounding an exact product once restores that property (and it
    also avoids the interpreter's bf16 dot, which multiplies bf16 bit patterns as integers)."""
    if DOT_FP64:
        c = tl.dot(a.to(tl.float64), b.to(tl.float64), input_precision="ieee").to(tl.float32)
    else:
        c = tl.dot(a, b, input_precision=INPUT_PRECISION)
    return c


@triton.jit
def _fwd_kernel(Q, K, V, Out, LSE, KPM, PHANTOM, ROW_PTR, COL_IDX,
                stride_qb, stride_qh, stride_qt,
                stride_kb, stride_kh, stride_kt,
                stride_vb, stride_vh, stride_vt,
                stride_ob, stride_oh, stride_ot,
                H, T, D, NB, lay_head_stride, qk_scale,
                HAS_KPM: tl.constexpr, FAITHFUL: tl.constexpr, BLOCK: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                INPUT_PRECISION: tl.constexpr, DOT_FP64: tl.constexpr):
    pid_m = tl.program_id(0)                                                # BLOCK_M query rows
    pid_bh = tl.program_id(1)
    off_b = (pid_bh // H).to(tl.int64)
    off_h = (pid_bh % H).to(tl.int64)
    k_base = K + off_b * stride_kb + off_h * stride_kh
    v_base = V + off_b * stride_vb + off_h * stride_vh
    r = (pid_m * BLOCK_M) // BLOCK                                          # their query block

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    row_ok = offs_m < T
    q = tl.load(Q + off_b * stride_qb + off_h * stride_qh + offs_m[:, None] * stride_qt + offs_d[None, :],
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)            # (BLOCK_M, BLOCK_D)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)               # running max (base 2)
    if FAITHFUL:
        phantom = tl.load(PHANTOM + pid_bh.to(tl.int64) * NB + r)           # zero logits of the rows
        m_i = tl.where(phantom > 0, tl.zeros([BLOCK_M], dtype=tl.float32), m_i)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)                             # running sum of exp2
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    row = off_h * lay_head_stride + r
    lo = tl.load(ROW_PTR + row)
    hi = tl.load(ROW_PTR + row + 1)
    for i in range(lo, hi):                                                 # listed key blocks only
        start_n = tl.load(COL_IDX + i).to(tl.int64) * BLOCK
        for sub in tl.static_range(0, BLOCK, BLOCK_N):
            offs_n = start_n + sub + tl.arange(0, BLOCK_N)
            col_ok = offs_n < T
            k = tl.load(k_base + offs_n[:, None] * stride_kt + offs_d[None, :],
                        mask=col_ok[:, None] & d_ok[None, :], other=0.0)    # (BLOCK_N, BLOCK_D)
            s = _mma(q, tl.trans(k), INPUT_PRECISION, DOT_FP64) * qk_scale  # (BLOCK_M, BLOCK_N)
            allowed = col_ok
            if HAS_KPM:
                kp = tl.load(KPM + off_b * T + offs_n, mask=col_ok, other=0)
                allowed = allowed & (kp != 0)
            s = tl.where(allowed[None, :], s, float("-inf"))

            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)           # empty so far: no NaN
            p = tl.exp2(s - m_safe[:, None])
            alpha = tl.exp2(m_i - m_safe)
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(v_base + offs_n[:, None] * stride_vt + offs_d[None, :],
                        mask=col_ok[:, None] & d_ok[None, :], other=0.0)    # (BLOCK_N, BLOCK_D)
            acc = acc * alpha[:, None]
            acc += _mma(p.to(v.dtype), v, INPUT_PRECISION, DOT_FP64)
            m_i = m_new

    if FAITHFUL:                                    # phantom > 0 implies m_i >= 0 (finite)
        m_fin = tl.where(m_i == float("-inf"), 0.0, m_i)
        l_i += tl.where(phantom > 0, phantom * tl.exp2(-m_fin), 0.0)
    empty = l_i == 0.0                                                      # nothing in the row
    l_safe = tl.where(empty, 1.0, l_i)
    acc = acc / l_safe[:, None]
    lse = tl.where(empty, 0.0, m_i + tl.log2(l_safe))
    tl.store(LSE + pid_bh.to(tl.int64) * T + offs_m, lse, mask=row_ok)
    tl.store(Out + off_b * stride_ob + off_h * stride_oh + offs_m[:, None] * stride_ot + offs_d[None, :],
             acc.to(Out.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])


@triton.jit
def _bwd_dkdv_kernel(Q, K, V, DO, LSE, DELTA, KPM, COL_PTR, ROW_IDX, DK, DV,
                     stride_qb, stride_qh, stride_qt,
                     stride_kb, stride_kh, stride_kt,
                     stride_vb, stride_vh, stride_vt,
                     stride_dob, stride_doh, stride_dot,
                     stride_gb, stride_gh, stride_gt,                       # dk and dv (same layout)
                     H, T, D, NB, lay_head_stride, qk_scale, sm_scale,
                     HAS_KPM: tl.constexpr, BLOCK: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                     INPUT_PRECISION: tl.constexpr, DOT_FP64: tl.constexpr):
    pid_n = tl.program_id(0)                                                # BLOCK_N keys
    pid_bh = tl.program_id(1)
    off_b = (pid_bh // H).to(tl.int64)
    off_h = (pid_bh % H).to(tl.int64)
    q_base = Q + off_b * stride_qb + off_h * stride_qh
    do_base = DO + off_b * stride_dob + off_h * stride_doh
    stats = pid_bh.to(tl.int64) * T                                         # lse / delta row offset
    c = (pid_n * BLOCK_N) // BLOCK                                          # their key block

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    key_in = offs_n < T
    kv_mask = key_in[:, None] & d_ok[None, :]
    k = tl.load(K + off_b * stride_kb + off_h * stride_kh + offs_n[:, None] * stride_kt + offs_d[None, :],
                mask=kv_mask, other=0.0)                                    # (BLOCK_N, BLOCK_D)
    v = tl.load(V + off_b * stride_vb + off_h * stride_vh + offs_n[:, None] * stride_vt + offs_d[None, :],
                mask=kv_mask, other=0.0)
    key_ok = key_in
    if HAS_KPM:
        kp = tl.load(KPM + off_b * T + offs_n, mask=key_in, other=0)
        key_ok = key_ok & (kp != 0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)

    col = off_h * lay_head_stride + c
    lo = tl.load(COL_PTR + col)
    hi = tl.load(COL_PTR + col + 1)
    for i in range(lo, hi):                                                 # query blocks listing it
        start_m = tl.load(ROW_IDX + i).to(tl.int64) * BLOCK
        for sub in tl.static_range(0, BLOCK, BLOCK_M):
            offs_m = start_m + sub + tl.arange(0, BLOCK_M)
            row_ok = offs_m < T
            qd_mask = row_ok[:, None] & d_ok[None, :]
            q = tl.load(q_base + offs_m[:, None] * stride_qt + offs_d[None, :], mask=qd_mask, other=0.0)
            do = tl.load(do_base + offs_m[:, None] * stride_dot + offs_d[None, :], mask=qd_mask, other=0.0)
            lse = tl.load(LSE + stats + offs_m, mask=row_ok, other=0.0)
            delta = tl.load(DELTA + stats + offs_m, mask=row_ok, other=0.0)

            st = _mma(k, tl.trans(q), INPUT_PRECISION, DOT_FP64) * qk_scale  # (BLOCK_N, BLOCK_M)
            allowed = key_ok[:, None] & row_ok[None, :]
            pt = tl.exp2(tl.where(allowed, st - lse[None, :], float("-inf")))  # P^T, fp32
            dv += _mma(pt.to(do.dtype), do, INPUT_PRECISION, DOT_FP64)
            dpt = _mma(v, tl.trans(do), INPUT_PRECISION, DOT_FP64)          # (dO V^T)^T
            dst = pt * (dpt - delta[None, :])                               # dS^T (natural units)
            dk += _mma(dst.to(q.dtype), q, INPUT_PRECISION, DOT_FP64)

    dk = dk * sm_scale
    g_off = off_b * stride_gb + off_h * stride_gh + offs_n[:, None] * stride_gt + offs_d[None, :]
    tl.store(DK + g_off, dk.to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + g_off, dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def _bwd_dq_kernel(Q, K, V, DO, LSE, DELTA, KPM, ROW_PTR, COL_IDX, DQ,
                   stride_qb, stride_qh, stride_qt,
                   stride_kb, stride_kh, stride_kt,
                   stride_vb, stride_vh, stride_vt,
                   stride_dob, stride_doh, stride_dot,
                   stride_gb, stride_gh, stride_gt,
                   H, T, D, NB, lay_head_stride, qk_scale, sm_scale,
                   HAS_KPM: tl.constexpr, BLOCK: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                   INPUT_PRECISION: tl.constexpr, DOT_FP64: tl.constexpr):
    pid_m = tl.program_id(0)                                                # BLOCK_M query rows
    pid_bh = tl.program_id(1)
    off_b = (pid_bh // H).to(tl.int64)
    off_h = (pid_bh % H).to(tl.int64)
    k_base = K + off_b * stride_kb + off_h * stride_kh
    v_base = V + off_b * stride_vb + off_h * stride_vh
    stats = pid_bh.to(tl.int64) * T
    r = (pid_m * BLOCK_M) // BLOCK

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    row_ok = offs_m < T
    qd_mask = row_ok[:, None] & d_ok[None, :]
    q = tl.load(Q + off_b * stride_qb + off_h * stride_qh + offs_m[:, None] * stride_qt + offs_d[None, :],
                mask=qd_mask, other=0.0)
    do = tl.load(DO + off_b * stride_dob + off_h * stride_doh + offs_m[:, None] * stride_dot
                 + offs_d[None, :], mask=qd_mask, other=0.0)
    lse = tl.load(LSE + stats + offs_m, mask=row_ok, other=0.0)
    delta = tl.load(DELTA + stats + offs_m, mask=row_ok, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    row = off_h * lay_head_stride + r
    lo = tl.load(ROW_PTR + row)
    hi = tl.load(ROW_PTR + row + 1)
    for i in range(lo, hi):
        start_n = tl.load(COL_IDX + i).to(tl.int64) * BLOCK
        for sub in tl.static_range(0, BLOCK, BLOCK_N):
            offs_n = start_n + sub + tl.arange(0, BLOCK_N)
            col_ok = offs_n < T
            kv_mask = col_ok[:, None] & d_ok[None, :]
            k = tl.load(k_base + offs_n[:, None] * stride_kt + offs_d[None, :], mask=kv_mask, other=0.0)
            v = tl.load(v_base + offs_n[:, None] * stride_vt + offs_d[None, :], mask=kv_mask, other=0.0)
            s = _mma(q, tl.trans(k), INPUT_PRECISION, DOT_FP64) * qk_scale  # (BLOCK_M, BLOCK_N)
            allowed = col_ok
            if HAS_KPM:
                kp = tl.load(KPM + off_b * T + offs_n, mask=col_ok, other=0)
                allowed = allowed & (kp != 0)
            p = tl.exp2(tl.where(allowed[None, :], s - lse[:, None], float("-inf")))
            dp = _mma(do, tl.trans(v), INPUT_PRECISION, DOT_FP64)
            ds = p * (dp - delta[:, None])
            dq += _mma(ds.to(k.dtype), k, INPUT_PRECISION, DOT_FP64)

    dq = dq * sm_scale
    tl.store(DQ + off_b * stride_gb + off_h * stride_gh + offs_m[:, None] * stride_gt + offs_d[None, :],
             dq.to(DQ.dtype.element_ty), mask=qd_mask)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------

def _bht_strides(x):
    return x.stride(0), x.stride(1), x.stride(2)


def default_tiles(block: int, head_dim: int, dtype: torch.dtype) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_N) inside a layout block: 64 x 64 for tensor-core dtypes with D <= 64, 64 x 32
    for larger D; 16 x 16 for fp32, whose exact dots run on CUDA cores and need far more registers.
    Chosen from sm_90 builds compiled offline (cuobjdump): bf16 64 x 64 (D = 32, 64) and fp32
    16 x 16 with 8 warps (D = 32) spill nothing; fp32 at D = 64 spills 200 bytes in dK/dV, 16 in dQ.
    Not yet timed on a GPU."""
    if dtype == torch.float32:
        return 16, 16
    return min(block, 64), min(block, 64 if head_dim <= 64 else 32)


def _meta(x, kpm, block, tiles):
    d = x.shape[-1]
    block_m, block_n = tiles
    block_d = max(16, triton.next_power_of_2(d))
    meta = dict(HAS_KPM=kpm is not None, BLOCK=block, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
                INPUT_PRECISION="ieee" if x.dtype == torch.float32 else None,  # None: Triton default
                DOT_FP64=INTERPRET)
    if not INTERPRET:
        small = max(block_m, block_n) * block_d <= 64 * 64 and x.dtype != torch.float32
        meta.update(num_warps=4 if small else 8, num_stages=2)
    return meta


def _layout_args(index):
    return index.num_blocks, index.num_blocks if index.layout_heads > 1 else 0


def _forward(q, k, v, index, kpm, phantom, sm_scale, tiles):
    """Launch the forward. Returns out (B, H, T, D) and lse (B, H, T) fp32 (base 2)."""
    b, h, t, d = q.shape
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = torch.empty((b, h, t), device=q.device, dtype=torch.float32)
    _fwd_kernel[(triton.cdiv(t, tiles[0]), b * h)](
        q, k, v, out, lse, kpm if kpm is not None else q, phantom if phantom is not None else lse,
        index.row_ptr, index.col_idx,
        *_bht_strides(q), *_bht_strides(k), *_bht_strides(v), *_bht_strides(out),
        h, t, d, *_layout_args(index), sm_scale * LOG2E,
        FAITHFUL=phantom is not None, **_meta(q, kpm, index.block, tiles))
    return out, lse


def _backward(do, q, k, v, out, lse, index, kpm, sm_scale, tiles):
    """Launch the backward. Returns dq, dk, dv (B, H, T, D) in q's dtype."""
    b, h, t, d = q.shape
    delta = (do.float() * out.float()).sum(-1).contiguous()                 # (B, H, T) fp32
    dq = torch.empty((b, h, t, d), device=q.device, dtype=q.dtype)
    dk, dv = torch.empty_like(dq), torch.empty_like(dq)
    kpm_arg = kpm if kpm is not None else q
    args = (*_bht_strides(q), *_bht_strides(k), *_bht_strides(v), *_bht_strides(do), *_bht_strides(dq),
            h, t, d, *_layout_args(index), sm_scale * LOG2E, sm_scale)
    meta = _meta(q, kpm, index.block, tiles)
    _bwd_dkdv_kernel[(triton.cdiv(t, tiles[1]), b * h)](q, k, v, do, lse, delta, kpm_arg, index.col_ptr,
                                                        index.row_idx, dk, dv, *args, **meta)
    _bwd_dq_kernel[(triton.cdiv(t, tiles[0]), b * h)](q, k, v, do, lse, delta, kpm_arg, index.row_ptr,
                                                      index.col_idx, dq, *args, **meta)
    return dq, dk, dv


def _unit_stride_last(x):
    return x if x.stride(-1) == 1 else x.contiguous()


# ---------------------------------------------------------------------------------------------
# Autograd and public function
# ---------------------------------------------------------------------------------------------

class BlockSparseAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, index, kpm, phantom, sm_scale, tiles):
        out, lse = _forward(q, k, v, index, kpm, phantom, sm_scale, tiles)
        ctx.save_for_backward(q, k, v, out, lse, kpm)
        ctx.index, ctx.sm_scale, ctx.tiles, ctx.has_kpm = index, sm_scale, tiles, kpm is not None
        return out

    @staticmethod
    def backward(ctx, do):
        q, k, v, out, lse, kpm = ctx.saved_tensors
        kpm = kpm if ctx.has_kpm else None
        do = _unit_stride_last(do.to(q.dtype))
        dq, dk, dv = _backward(do, q, k, v, out, lse, ctx.index, kpm, ctx.sm_scale, ctx.tiles)
        return dq, dk, dv, None, None, None, None, None


def block_sparse_attention_triton(q, k, v, *, layout, block: int, key_padding_mask=None, scale=None,
                                  softmax: str = "standard", tiles: tuple[int, int] | None = None):
    """Block-sparse attention with the Triton kernel (differentiable).

    q, k, v: (B, H, T, D), same shape, dtype and device (float32, bfloat16 or float16; D <= 256);
    layout: bool (nb, nb) or (H, nb, nb), nb = ceil(T / block), or a prebuilt ``BlockIndex`` (reuse
    it across calls to skip rebuilding the index); block: 16, 32, 64, 128 or 256;
    key_padding_mask: optional (B, T) bool, True = real key; scale: default 1/sqrt(D);
    softmax: 'standard' or 'faithful'; tiles: (BLOCK_M, BLOCK_N), powers of two in 16..block
    (default ``default_tiles``). Returns (B, H, T, D) in q's dtype.
    """
    if not (q.shape == k.shape == v.shape) or q.dim() != 4:
        raise ValueError(f"q, k, v must share one (B, H, T, D) shape; got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in DTYPES:
        raise ValueError(f"q, k, v dtypes {q.dtype}, {k.dtype}, {v.dtype}; allowed: one of "
                         "float32, bfloat16, float16 for all three")
    b, h, t, d = q.shape
    if not kernel_supports(block, d, q.dtype):
        raise ValueError(f"block={block}, head dim D={d}: allowed block in {BLOCKS}, D in 1..{MAX_HEAD_DIM}")
    if softmax not in ("standard", "faithful"):
        raise ValueError(f"softmax={softmax!r}; allowed: standard, faithful")
    index = layout if isinstance(layout, BlockIndex) else block_index(layout.to(q.device), block)
    nb = math.ceil(t / block)
    if index.block != block or index.num_blocks != nb or index.layout_heads not in (1, h):
        raise ValueError(f"layout (H_l={index.layout_heads}, nb={index.num_blocks}, block={index.block}) "
                         f"does not fit T={t}, H={h}, block={block} (nb must be {nb})")
    tiles = default_tiles(block, d, q.dtype) if tiles is None else tuple(tiles)
    if len(tiles) != 2 or any(x not in BLOCKS or x > block for x in tiles):
        raise ValueError(f"tiles={tiles}; allowed: two powers of two in 16..block={block}")
    if key_padding_mask is not None:
        if tuple(key_padding_mask.shape) != (b, t):
            raise ValueError(f"key_padding_mask shape {tuple(key_padding_mask.shape)}; expected (B, T) = {(b, t)}")
        key_padding_mask = key_padding_mask.to(device=q.device, dtype=torch.int8).contiguous()
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    if t == 0 or b * h == 0:
        return q * 0.0                                                      # empty output
    phantom = _phantom_counts(index, b, h, t, key_padding_mask) if softmax == "faithful" else None
    q, k, v = (_unit_stride_last(x) for x in (q, k, v))
    return BlockSparseAttention.apply(q, k, v, index, key_padding_mask, phantom, scale, tiles)
