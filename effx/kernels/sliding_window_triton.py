"""Sliding-window attention in Triton, forward and backward: query i attends to keys |i - j| <= window.

The FlashAttention-2 recipe (Dao, 2023) restricted to a band, as in Longformer's local attention.
Shapes: q, k, v, out are (B, H, T, D); key_padding_mask is (B, T) bool, True = real token.

Forward (`_fwd_kernel`): one program per (query block of BLOCK_M rows, batch*head). It visits only
the key blocks that intersect [start - window, end + window], so work is O(T * (BLOCK_M + 2 * window))
and linear in T. Online softmax in base 2 with fp32 accumulators; each row stores its log-sum-exp
(base 2, of the scaled scores) for the backward. A row with no allowed key outputs zeros (lse = 0).

Backward: delta = rowsum(dO * O) (fp32, in PyTorch), then
  `_bwd_dkdv_kernel`: one program per key block; loops over the query blocks of its band and
                      accumulates dK, dV (P is recomputed from the stored lse);
  `_bwd_dq_kernel`:   one program per query block; loops over the key blocks of its band.
No atomics: every output row is written by exactly one program.

Head dims up to 256 are supported (D is padded to a power of two >= 16 inside the kernels by
masked loads). fp32 inputs use exact ("ieee") dots; bf16/fp16 use tensor cores with fp32 accumulation.
Under TRITON_INTERPRET=1 the kernels run on CPU tensors (slow; used by the tests).

This module ends at the launchers. The differentiable call is ``effx.attention.sliding_window_attention``
(``backend="triton"`` forces this kernel): it runs the launchers inside torch.library custom ops
with registered FLOP formulas, so FlopCounterMode counts the band on every device. The tiles the
forward really multiplies (whole blocks around the band) are ``tile_pairs``.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634  # log2(e): softmax in base 2 uses exp2
MAX_HEAD_DIM = 256
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
#: EFFX_TRITON_AUTOTUNE=0: each kernel's last (smallest) GPU configuration alone, no autotuning,
#: for correctness checks (on an H200 the autotuner's 12 compilations per new shape took ~45 s a
#: test case)
AUTOTUNE = os.environ.get("EFFX_TRITON_AUTOTUNE", "1") != "0"

# ---------------------------------------------------------------------------------------------
# Configurations. On a GPU a small autotune (configs that do not fit are pruned by Triton as
# out-of-resources); under the interpreter one small config with unequal blocks, so that the
# tests exercise the band alignment logic with several blocks per sequence.
# ---------------------------------------------------------------------------------------------


def _configs(pairs):
    if INTERPRET:
        return [triton.Config({"BLOCK_M": pairs[0][0], "BLOCK_N": pairs[0][1]})]
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)
            for m, n, w, s in (pairs[1:] if AUTOTUNE else pairs[-1:])]


# first entry: the interpreter's config; the rest: GPU candidates (BLOCK_M, BLOCK_N, warps, stages)
FWD_CONFIGS = _configs([(32, 16), (128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3)])
DKDV_CONFIGS = _configs([(16, 32), (32, 128, 4, 3), (64, 128, 8, 3), (64, 64, 4, 3), (32, 64, 4, 3)])
DQ_CONFIGS = _configs([(32, 16), (128, 32, 4, 3), (128, 64, 8, 3), (64, 64, 4, 3), (64, 32, 4, 3)])
# the length is part of the key: the best blocks at T=1k are not those at T=64k (and a config tuned
# at one T must not be reused at another); Triton adds the tensors' dtypes to the key
TUNE_KEY = ["T", "window", "BLOCK_D"]


# ---------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------

@triton.jit
def _mma(a, b, INPUT_PRECISION: tl.constexpr, DOT_FP32: tl.constexpr):
    """a @ b with fp32 accumulation. DOT_FP32 upcasts the operands first: only for bf16 under the
    interpreter, whose dot multiplies bf16 bit patterns as integers (the values are the same)."""
    if DOT_FP32:
        c = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        c = tl.dot(a, b, input_precision=INPUT_PRECISION)
    return c


@triton.autotune(configs=FWD_CONFIGS, key=TUNE_KEY)
@triton.jit
def _fwd_kernel(Q, K, V, Out, LSE, KPM,
                stride_qb, stride_qh, stride_qt,
                stride_kb, stride_kh, stride_kt,
                stride_vb, stride_vh, stride_vt,
                stride_ob, stride_oh, stride_ot,
                H, T, D, window, qk_scale,
                HAS_KPM: tl.constexpr, BLOCK_D: tl.constexpr,
                INPUT_PRECISION: tl.constexpr, DOT_FP32: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    off_b = (pid_bh // H).to(tl.int64)
    off_h = (pid_bh % H).to(tl.int64)
    q_base = Q + off_b * stride_qb + off_h * stride_qh
    k_base = K + off_b * stride_kb + off_h * stride_kh
    v_base = V + off_b * stride_vb + off_h * stride_vh
    o_base = Out + off_b * stride_ob + off_h * stride_oh

    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    row_ok = offs_m < T
    q = tl.load(q_base + offs_m[:, None] * stride_qt + offs_d[None, :],
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)            # (BLOCK_M, BLOCK_D)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)               # running max (base 2)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)                             # running sum of exp2
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    # key blocks intersecting the band [start_m - window, start_m + BLOCK_M - 1 + window]
    lo = (tl.maximum(start_m - window, 0) // BLOCK_N) * BLOCK_N
    hi = tl.minimum(start_m + BLOCK_M + window, T)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        col_ok = offs_n < T
        kt = tl.load(k_base + offs_n[None, :] * stride_kt + offs_d[:, None],
                     mask=col_ok[None, :] & d_ok[:, None], other=0.0)       # (BLOCK_D, BLOCK_N)
        s = _mma(q, kt, INPUT_PRECISION, DOT_FP32) * qk_scale       # (BLOCK_M, BLOCK_N)
        dist = offs_m[:, None] - offs_n[None, :]
        allowed = (dist <= window) & (dist >= -window) & col_ok[None, :]
        if HAS_KPM:
            kp = tl.load(KPM + off_b * T + offs_n, mask=col_ok, other=0)
            allowed = allowed & (kp != 0)[None, :]
        s = tl.where(allowed, s, float("-inf"))

        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)               # empty so far: no NaN
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + offs_n[:, None] * stride_vt + offs_d[None, :],
                    mask=col_ok[:, None] & d_ok[None, :], other=0.0)        # (BLOCK_N, BLOCK_D)
        acc = acc * alpha[:, None]
        acc += _mma(p.to(v.dtype), v, INPUT_PRECISION, DOT_FP32)
        m_i = m_new

    empty = l_i == 0.0                                                      # no allowed key
    l_safe = tl.where(empty, 1.0, l_i)
    acc = acc / l_safe[:, None]
    lse = tl.where(empty, 0.0, m_i + tl.log2(l_safe))
    tl.store(LSE + pid_bh.to(tl.int64) * T + offs_m, lse, mask=row_ok)
    tl.store(o_base + offs_m[:, None] * stride_ot + offs_d[None, :], acc.to(Out.dtype.element_ty),
             mask=row_ok[:, None] & d_ok[None, :])


# ---------------------------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------------------------

@triton.autotune(configs=DKDV_CONFIGS, key=TUNE_KEY)
@triton.jit
def _bwd_dkdv_kernel(Q, K, V, DO, LSE, DELTA, KPM, DK, DV,
                     stride_qb, stride_qh, stride_qt,
                     stride_kb, stride_kh, stride_kt,
                     stride_vb, stride_vh, stride_vt,
                     stride_dob, stride_doh, stride_dot,
                     stride_gb, stride_gh, stride_gt,                       # dk and dv (same layout)
                     H, T, D, window, qk_scale, sm_scale,
                     HAS_KPM: tl.constexpr, BLOCK_D: tl.constexpr,
                INPUT_PRECISION: tl.constexpr, DOT_FP32: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    off_b = (pid_bh // H).to(tl.int64)
    off_h = (pid_bh % H).to(tl.int64)
    q_base = Q + off_b * stride_qb + off_h * stride_qh
    k_base = K + off_b * stride_kb + off_h * stride_kh
    v_base = V + off_b * stride_vb + off_h * stride_vh
    do_base = DO + off_b * stride_dob + off_h * stride_doh
    stats = pid_bh.to(tl.int64) * T                                         # lse / delta row offset

    start_n = pid_n * BLOCK_N
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    key_ok = offs_n < T
    kv_mask = key_ok[:, None] & d_ok[None, :]
    k = tl.load(k_base + offs_n[:, None] * stride_kt + offs_d[None, :], mask=kv_mask, other=0.0)
    v = tl.load(v_base + offs_n[:, None] * stride_vt + offs_d[None, :], mask=kv_mask, other=0.0)
    if HAS_KPM:
        kp = tl.load(KPM + off_b * T + offs_n, mask=key_ok, other=0)
        key_ok = key_ok & (kp != 0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)

    # query blocks intersecting the band [start_n - window, start_n + BLOCK_N - 1 + window]
    lo = (tl.maximum(start_n - window, 0) // BLOCK_M) * BLOCK_M
    hi = tl.minimum(start_n + BLOCK_N + window, T)
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        row_ok = offs_m < T
        qd_mask = row_ok[:, None] & d_ok[None, :]
        q = tl.load(q_base + offs_m[:, None] * stride_qt + offs_d[None, :], mask=qd_mask, other=0.0)
        do = tl.load(do_base + offs_m[:, None] * stride_dot + offs_d[None, :], mask=qd_mask, other=0.0)
        lse = tl.load(LSE + stats + offs_m, mask=row_ok, other=0.0)
        delta = tl.load(DELTA + stats + offs_m, mask=row_ok, other=0.0)

        st = _mma(k, tl.trans(q), INPUT_PRECISION, DOT_FP32) * qk_scale   # (BLOCK_N, BLOCK_M)
        dist = offs_m[None, :] - offs_n[:, None]
        allowed = (dist <= window) & (dist >= -window) & key_ok[:, None] & row_ok[None, :]
        pt = tl.exp2(tl.where(allowed, st - lse[None, :], float("-inf")))  # P^T, fp32
        dv += _mma(pt.to(do.dtype), do, INPUT_PRECISION, DOT_FP32)
        dpt = _mma(v, tl.trans(do), INPUT_PRECISION, DOT_FP32)      # (dO V^T)^T
        dst = pt * (dpt - delta[None, :])                                   # dS^T (natural units)
        dk += _mma(dst.to(q.dtype), q, INPUT_PRECISION, DOT_FP32)

    dk = dk * sm_scale
    g_off = off_b * stride_gb + off_h * stride_gh + offs_n[:, None] * stride_gt + offs_d[None, :]
    g_mask = (offs_n < T)[:, None] & d_ok[None, :]
    tl.store(DK + g_off, dk.to(DK.dtype.element_ty), mask=g_mask)
    tl.store(DV + g_off, dv.to(DV.dtype.element_ty), mask=g_mask)


@triton.autotune(configs=DQ_CONFIGS, key=TUNE_KEY)
@triton.jit
def _bwd_dq_kernel(Q, K, V, DO, LSE, DELTA, KPM, DQ,
                   stride_qb, stride_qh, stride_qt,
                   stride_kb, stride_kh, stride_kt,
                   stride_vb, stride_vh, stride_vt,
                   stride_dob, stride_doh, stride_dot,
                   stride_gb, stride_gh, stride_gt,
                   H, T, D, window, qk_scale, sm_scale,
                   HAS_KPM: tl.constexpr, BLOCK_D: tl.constexpr,
                INPUT_PRECISION: tl.constexpr, DOT_FP32: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    off_b = (pid_bh // H).to(tl.int64)
    off_h = (pid_bh % H).to(tl.int64)
    k_base = K + off_b * stride_kb + off_h * stride_kh
    v_base = V + off_b * stride_vb + off_h * stride_vh
    stats = pid_bh.to(tl.int64) * T

    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
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

    lo = (tl.maximum(start_m - window, 0) // BLOCK_N) * BLOCK_N
    hi = tl.minimum(start_m + BLOCK_M + window, T)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        col_ok = offs_n < T
        kv_mask = col_ok[:, None] & d_ok[None, :]
        k = tl.load(k_base + offs_n[:, None] * stride_kt + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_base + offs_n[:, None] * stride_vt + offs_d[None, :], mask=kv_mask, other=0.0)
        s = _mma(q, tl.trans(k), INPUT_PRECISION, DOT_FP32) * qk_scale    # (BLOCK_M, BLOCK_N)
        dist = offs_m[:, None] - offs_n[None, :]
        allowed = (dist <= window) & (dist >= -window) & col_ok[None, :]
        if HAS_KPM:
            kp = tl.load(KPM + off_b * T + offs_n, mask=col_ok, other=0)
            allowed = allowed & (kp != 0)[None, :]
        p = tl.exp2(tl.where(allowed, s - lse[:, None], float("-inf")))
        dp = _mma(do, tl.trans(v), INPUT_PRECISION, DOT_FP32)
        ds = p * (dp - delta[:, None])
        dq += _mma(ds.to(k.dtype), k, INPUT_PRECISION, DOT_FP32)

    dq = dq * sm_scale
    tl.store(DQ + off_b * stride_gb + off_h * stride_gh + offs_m[:, None] * stride_gt + offs_d[None, :],
             dq.to(DQ.dtype.element_ty), mask=qd_mask)


# ---------------------------------------------------------------------------------------------
# Launchers (not differentiable by themselves: effx.attention.sliding_window wraps them, with the
# PyTorch path, in the custom ops effx::sliding_window_forward / _backward, which autograd and
# FlopCounterMode see)
# ---------------------------------------------------------------------------------------------

def _bht_strides(x):
    return x.stride(0), x.stride(1), x.stride(2)


def _block_d(d: int) -> int:
    return max(16, triton.next_power_of_2(d))


def _common_meta(x, kpm):
    return dict(HAS_KPM=kpm is not None, BLOCK_D=_block_d(x.shape[-1]),
                INPUT_PRECISION="ieee" if x.dtype == torch.float32 else None,  # None: Triton default
                DOT_FP32=INTERPRET and x.dtype == torch.bfloat16)


def _unit_stride_last(x):
    return x if x.stride(-1) == 1 else x.contiguous()


def _kpm_arg(kpm, like):
    return like if kpm is None else kpm.to(device=like.device, dtype=torch.int8).contiguous()


def check_inputs(q, k, v):
    """Raise ValueError unless q, k, v suit the kernel: one (B, H, T, D) shape, D <= 256, one
    dtype among float32, bfloat16, float16."""
    if not (q.shape == k.shape == v.shape) or q.dim() != 4:
        raise ValueError(f"q, k, v must share one (B, H, T, D) shape; got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"q, k, v dtypes {q.dtype}, {k.dtype}, {v.dtype}; allowed: one of "
                         "float32, bfloat16, float16 for all three")
    if not 1 <= q.shape[-1] <= MAX_HEAD_DIM:
        raise ValueError(f"head dim D={q.shape[-1]}; allowed: 1..{MAX_HEAD_DIM}")


def sliding_window_forward(q, k, v, window: int, key_padding_mask, scale: float):
    """Forward launch. q, k, v: (B, H, T, D) (last-dim stride 1 or copied), window in [0, T),
    key_padding_mask: (B, T) bool or None, True = real token.
    Returns out (B, H, T, D) in q's dtype and lse (B, H, T) fp32: each row's log-sum-exp in base 2
    of the scaled scores (0 for rows with no allowed key, whose output is 0)."""
    q, k, v = (_unit_stride_last(x) for x in (q, k, v))
    b, h, t, d = q.shape
    kpm = None if key_padding_mask is None else _kpm_arg(key_padding_mask, q)
    out = torch.empty((b, h, t, d), device=q.device, dtype=q.dtype)
    lse = torch.empty((b, h, t), device=q.device, dtype=torch.float32)
    grid = lambda meta: (triton.cdiv(t, meta["BLOCK_M"]), b * h)  # noqa: E731
    _fwd_kernel[grid](q, k, v, out, lse, kpm if kpm is not None else q,
                      *_bht_strides(q), *_bht_strides(k), *_bht_strides(v), *_bht_strides(out),
                      h, t, d, window, scale * LOG2E, **_common_meta(q, kpm))
    return out, lse


def sliding_window_backward(do, q, k, v, out, lse, window: int, key_padding_mask, scale: float):
    """Backward launch from the forward's out and lse. Returns dq, dk, dv (B, H, T, D), q's dtype."""
    q, k, v = (_unit_stride_last(x) for x in (q, k, v))
    do = _unit_stride_last(do.to(q.dtype))
    b, h, t, d = q.shape
    kpm = None if key_padding_mask is None else _kpm_arg(key_padding_mask, q)
    delta = (do.float() * out.float()).sum(-1).contiguous()                 # (B, H, T) fp32
    dq = torch.empty((b, h, t, d), device=q.device, dtype=q.dtype)
    dk = torch.empty_like(dq)
    dv = torch.empty_like(dq)
    kpm_arg = kpm if kpm is not None else q
    args = (*_bht_strides(q), *_bht_strides(k), *_bht_strides(v), *_bht_strides(do), *_bht_strides(dq),
            h, t, d, window, scale * LOG2E, scale)
    meta = _common_meta(q, kpm)
    grid_n = lambda m: (triton.cdiv(t, m["BLOCK_N"]), b * h)  # noqa: E731
    _bwd_dkdv_kernel[grid_n](q, k, v, do, lse, delta, kpm_arg, dk, dv, *args, **meta)
    grid_m = lambda m: (triton.cdiv(t, m["BLOCK_M"]), b * h)  # noqa: E731
    _bwd_dq_kernel[grid_m](q, k, v, do, lse, delta, kpm_arg, dq, *args, **meta)
    return dq, dk, dv


# ---------------------------------------------------------------------------------------------
# What the forward computes: whole (BLOCK_M x BLOCK_N) tiles that intersect the band
# ---------------------------------------------------------------------------------------------

def forward_blocks() -> tuple[int, int]:
    """(BLOCK_M, BLOCK_N) of the forward: the config the autotuner chose at its last call, else
    the first candidate (the interpreter's only one)."""
    cfg = getattr(_fwd_kernel, "best_config", None) or FWD_CONFIGS[0]
    return cfg.kwargs["BLOCK_M"], cfg.kwargs["BLOCK_N"]


def tile_pairs(t: int, window: int, block_m: int, block_n: int) -> int:
    """(query, key) pairs the forward multiplies per (batch, head): for every query block, every
    key block its loop visits (the same bounds as `_fwd_kernel`), whole tiles."""
    w, pairs = min(window, t), 0
    for start_m in range(0, t, block_m):
        lo = (max(start_m - w, 0) // block_n) * block_n
        hi = min(start_m + block_m + w, t)
        pairs += block_m * block_n * triton.cdiv(hi - lo, block_n)
    return pairs
