"""Sliding-window (local) attention: query i sees keys j with |i - j| <= window.

As in Longformer's local attention and the L-HuBERT of Diwan et al. (2023). Cost is linear in T:
each query sees at most 2 * window + 1 keys (fewer near the edges: ``band_pairs``).

One call, two paths (nanochat style), ``backend=`` forces one (tests do):
- ``triton``: the FlashAttention-style band kernel of ``effx.kernels.sliding_window_triton``
  (CUDA; CPU tensors under TRITON_INTERPRET=1). The default ('auto') on CUDA tensors.
- ``torch``: queries in chunks of ``c`` (``chunk_size``), each chunk against its span of
  c + 2w keys, a strided view of k (no copy; the few chunks at the edges use a zero-padded copy);
  one fused attention call for all interior chunks with one shared (c, c + 2w) band mask (one
  chunk of all T queries and a (T, T) band mask when that is less work). On CPU that call is PyTorch's flash kernel
  (``aten._scaled_dot_product_flash_attention_for_cpu`` and its backward); on other devices the
  same math in plain PyTorch ops. No (T, span) score tensor is kept: the forward stores O(T * D);
  the backward recomputes the scores and holds each chunk's key-span gradients, (c + 2w) / c
  times the size of k, before adding the overlapping spans up.

Both paths run inside two torch.library custom ops, ``effx::sliding_window_forward`` and
``effx::sliding_window_backward``, with registered FLOP formulas: FlopCounterMode (and so
``effx.profiling.count_flops``) counts the band, 4*B*H*D*band_pairs forward and 2.5x that
backward (FlashAttention's convention: the backward recomputes the scores once), whatever path
ran and on every device. What a path multiplies beyond the band (the torch path's chunk spans,
the kernel's whole tiles) is ``computed_pairs`` / ``SLIDING_WINDOW.computed_flops(path=...)``:
reported apart, never mixed into the counted FLOPs.
"""
from __future__ import annotations

import math

import torch
from torch.utils.flop_counter import register_flop_formula

from effx.attention.reference import sliding_window_mask
from effx.attention.sliding_window_torch import _torch_backward, _torch_forward, chunk_size
from effx.attention.spec import REQUIRED, AttentionSpec

try:  # the kernel is optional: CPU-only installs and old Triton still work through the torch path
    from effx.kernels import sliding_window_triton as _kernel
    HAS_TRITON_KERNEL = True
except Exception:  # noqa: BLE001 - any import failure means "no kernel"
    _kernel = None
    HAS_TRITON_KERNEL = False

BACKENDS = ("auto", "triton", "torch")
PATHS = ("triton", "torch")
BACKWARD_FACTOR = 2.5     # counted backward FLOPs / forward FLOPs, both paths


# ---------------------------------------------------------------------------------------------
# The band and the chunks
# ---------------------------------------------------------------------------------------------

def band_pairs(t: int, window: int) -> int:
    """(query, key) pairs with |i - j| <= window inside [0, T): the full band (2w+1) T minus the
    w (w + 1) pairs cut off at the two edges, w = min(window, T - 1)."""
    if t <= 0:
        return 0
    w = min(window, t - 1)
    return (2 * w + 1) * t - w * (w + 1)


def computed_pairs(t: int, window: int, path: str) -> int:
    """(query, key) pairs a path's forward multiplies per (batch, head), padding included: the torch
    path computes every chunk's whole span (T^2 for one chunk of all T queries); the kernel its
    whole tiles (the autotuner's current forward blocks)."""
    if t <= 0:
        return 0
    w = min(window, t - 1)
    if path == "torch":
        c = chunk_size(t, w)
        return t * t if c == t else math.ceil(t / c) * c * (c + 2 * w)
    if path == "triton":
        if not HAS_TRITON_KERNEL:
            raise RuntimeError("the Triton kernel is not importable here")
        return _kernel.tile_pairs(t, w, *_kernel.forward_blocks())
    raise ValueError(f"path={path!r}; allowed: {', '.join(PATHS)}")


def resolve_backend(backend: str, x: torch.Tensor) -> str:
    """The path a call takes for tensors like ``x``: 'triton' or 'torch'."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}; allowed: {', '.join(BACKENDS)}")
    if backend == "triton" and not HAS_TRITON_KERNEL:
        raise RuntimeError("backend='triton' requested but the Triton kernel failed to import")
    if backend == "auto":
        return "triton" if (x.is_cuda and HAS_TRITON_KERNEL) else "torch"
    return backend


# ---------------------------------------------------------------------------------------------
# Custom ops: what autograd and FlopCounterMode see, on every path
# ---------------------------------------------------------------------------------------------

@torch.library.custom_op(
    "effx::sliding_window_forward", mutates_args=(),
    schema="(Tensor q, Tensor k, Tensor v, int window, float scale, Tensor? key_padding_mask, "
           "str path) -> (Tensor, Tensor)")
def _forward_op(q, k, v, window, scale, key_padding_mask, path):
    """out (B, H, T, D) and the row statistics its path's backward needs (B, H, T)."""
    if path == "triton":
        return _kernel.sliding_window_forward(q, k, v, window, key_padding_mask, scale)
    return _torch_forward(q, k, v, window, scale, key_padding_mask)


@_forward_op.register_fake
def _forward_fake(q, k, v, window, scale, key_padding_mask, path):
    stats = torch.float64 if q.dtype == torch.float64 else torch.float32
    return torch.empty(q.shape, dtype=q.dtype, device=q.device), q.new_empty(q.shape[:3], dtype=stats)


@torch.library.custom_op(
    "effx::sliding_window_backward", mutates_args=(),
    schema="(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, int window, "
           "float scale, Tensor? key_padding_mask, str path) -> (Tensor, Tensor, Tensor)")
def _backward_op(grad_out, q, k, v, out, lse, window, scale, key_padding_mask, path):
    if path == "triton":
        return _kernel.sliding_window_backward(grad_out, q, k, v, out, lse, window, key_padding_mask, scale)
    return _torch_backward(grad_out, q, k, v, out, lse, window, scale, key_padding_mask)


@_backward_op.register_fake
def _backward_fake(grad_out, q, k, v, out, lse, window, scale, key_padding_mask, path):
    return tuple(torch.empty(x.shape, dtype=x.dtype, device=x.device) for x in (q, k, v))


def _setup_context(ctx, inputs, output):
    q, k, v, window, scale, key_padding_mask, path = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, key_padding_mask)
    ctx.window, ctx.scale, ctx.path = window, scale, path


def _autograd_backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse, key_padding_mask = ctx.saved_tensors
    dq, dk, dv = torch.ops.effx.sliding_window_backward(grad_out, q, k, v, out, lse, ctx.window,
                                                        ctx.scale, key_padding_mask, ctx.path)
    return dq, dk, dv, None, None, None, None


_forward_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def _register_flops():
    """The band's FLOPs for FlopCounterMode (PyTorch's registry: any FlopCounterMode counts them)."""
    from torch.utils.flop_counter import flop_registry

    def forward_flops(q_shape, k_shape, v_shape, window, *args, out_shape=None, **kwargs) -> int:
        b, h, t, d = q_shape
        return 4 * b * h * d * band_pairs(t, window)

    def backward_flops(grad_out_shape, q_shape, k_shape, v_shape, out_shape_, lse_shape, window,
                       *args, out_shape=None, **kwargs) -> int:
        return int(BACKWARD_FACTOR * forward_flops(q_shape, k_shape, v_shape, window))

    for op, formula in ((torch.ops.effx.sliding_window_forward, forward_flops),
                        (torch.ops.effx.sliding_window_backward, backward_flops)):
        if op not in flop_registry:                                     # importable twice (reloads)
            register_flop_formula(op)(formula)


_register_flops()


# ---------------------------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------------------------

def sliding_window_attention(q, k, v, *, window: int, key_padding_mask=None, scale=None,
                             backend: str = "auto"):
    """Sliding-window attention, |i - j| <= window. q, k, v: (B, H, T, D) -> (B, H, T, D).

    key_padding_mask: (B, T) bool, True = real token; a query with no real key in its window
    outputs zeros. scale: default 1/sqrt(D). backend: 'auto' (the Triton kernel on CUDA when it
    imports, else the torch path), 'triton' or 'torch'. Differentiable on both paths.
    """
    path = resolve_backend(backend, q)
    if window < 0:
        raise ValueError(f"window={window}; allowed: an integer >= 0")
    if not (q.shape == k.shape == v.shape) or q.dim() != 4:
        raise ValueError(f"q, k, v must share one (B, H, T, D) shape; got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    b, h, t, d = q.shape
    if key_padding_mask is not None and tuple(key_padding_mask.shape) != (b, t):
        raise ValueError(f"key_padding_mask shape {tuple(key_padding_mask.shape)}; expected (B, T) = {(b, t)}")
    if path == "triton":
        _kernel.check_inputs(q, k, v)
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    if t == 0 or b * h == 0:
        return q * 0.0                                                  # empty output
    kpm = None if key_padding_mask is None else key_padding_mask.to(device=q.device, dtype=torch.bool)
    out, _ = torch.ops.effx.sliding_window_forward(q, k, v, int(min(window, t - 1)), scale, kpm, path)
    return out


def sliding_window_attention_torch(q, k, v, *, window: int, key_padding_mask=None, scale=None):
    """``sliding_window_attention`` on the torch path (any device)."""
    return sliding_window_attention(q, k, v, window=window, key_padding_mask=key_padding_mask,
                                    scale=scale, backend="torch")


def sliding_window_attention_triton(q, k, v, *, window: int, key_padding_mask=None, scale=None):
    """``sliding_window_attention`` on the Triton kernel (CUDA, or CPU under TRITON_INTERPRET=1)."""
    return sliding_window_attention(q, k, v, window=window, key_padding_mask=key_padding_mask,
                                    scale=scale, backend="triton")


# ---------------------------------------------------------------------------------------------
# Spec (effx.attention.spec)
# ---------------------------------------------------------------------------------------------

def _computed_flops(batch, heads, t, head_dim, o, path):
    path = path or "torch"
    if path == "triton":      # the kernel multiplies D padded to a power of two >= 16
        head_dim = max(16, 1 << max(head_dim - 1, 0).bit_length())
    return 4.0 * batch * heads * head_dim * computed_pairs(t, o["window"], path)


SLIDING_WINDOW = AttentionSpec(
    "sliding_window", sliding_window_attention, options={"window": REQUIRED, "backend": "auto"},
    runtime=("backend",), backward_factor=BACKWARD_FACTOR, paths=PATHS,
    keys=lambda t, o: band_pairs(t, o["window"]) / t if t else 0.0,
    pattern=lambda t, o: sliding_window_mask(t, o["window"]),
    computed=_computed_flops,
    summary="local attention, |i - j| <= window (Longformer, L-HuBERT); linear in T")
