"""FLOP counting with PyTorch's FlopCounterMode, made to see every attention kernel on every device.

FlopCounterMode knows the CUDA SDPA kernels (flash, memory-efficient, cuDNN) but not the CPU one
(``_scaled_dot_product_flash_attention_for_cpu``), which it counts as 0. We register that op and
its backward with the same formulas, so attention is never silently free.
effx's own kernels are torch.library custom ops with FLOP formulas in PyTorch's registry
(``effx::sliding_window_forward`` / ``_backward``: the band, 2.5x backward), registered when
``effx.attention`` is imported (done here): FlopCounterMode counts them whatever path ran, and
never the ops inside them. Each attention spec's ``flops`` equals what is counted here
(tests/test_flops.py); what a path computes beyond that is the spec's ``computed_flops``.
Convention: 1 multiply-add = 2 FLOPs (PyTorch's convention).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

import effx.attention  # noqa: F401 - registers the FLOP formulas of effx's custom attention ops

aten = torch.ops.aten


# FlopCounterMode hands custom formulas the *shapes* of tensor arguments.
def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args,
                             out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _custom_mapping() -> dict:
    mapping = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa_flops
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _cpu_sdpa_backward_flops
    return mapping


def flop_counter(display: bool = False) -> FlopCounterMode:
    """A FlopCounterMode that also counts CPU fused attention."""
    return FlopCounterMode(display=display, custom_mapping=_custom_mapping())


def count_flops(fn: Callable[[], object]) -> tuple[int, dict[str, int]]:
    """Total FLOPs of one call of `fn`, and FLOPs per aten operator."""
    counter = flop_counter()
    with counter:
        fn()
    per_op: dict[str, int] = {}
    for module_counts in [counter.get_flop_counts().get("Global", {})]:
        for op, n in module_counts.items():
            per_op[str(op)] = per_op.get(str(op), 0) + int(n)
    return int(counter.get_total_flops()), per_op
