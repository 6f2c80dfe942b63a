"""Attention-core ablation: the same model with its attention core replaced by a same-shape no-op.

The cost-breakdown study (Diwan et al., ACL 2023) attributes profiled operator time to
Transformer components (``effx.profiling.components``). The ablation measures the attention
core's cost a second, independent way: the plain step minus the step whose attention core
returns a copy of the values instead of attending. Both numbers should agree.

``attention_core_ablated(model)`` is a context manager; inside it every attention core of
``model`` returns ``v`` (copied; backward: the gradient to ``v``, zeros to ``q`` and ``k``, so
the Q/K/V projections' backward still runs) in the shape, dtype and layout the real core
returns. It yields an ``Ablation`` whose ``calls`` counts the no-op calls: a caller can check
that the model really went through the no-op. How each model family is ablated:

    effx Encoder     its ``AttentionCore`` modules (the whole core) run the no-op
    BERT, ViT        transformers' attention interface: the model's implementation name
                     ("sdpa", "eager") maps to the no-op for this model's modules only
    HuBERT, L-HuBERT torchaudio's SelfAttention is swapped for effx's SwappedSelfAttention
                     (``effx.models.lhubert``, same projection modules) with the no-op core;
                     an already swapped one (eager HuBERT, L-HuBERT) gets the no-op function

Longformer, BigBird, Nystromformer, PVTv2 compute attention inline in their own attention
modules, and Swin's table counts window partition, shift and relative position bias as attention
core: those raise ``effx.errors.Unsupported`` with the reason (``UNSUPPORTED``).
"""
from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from effx.errors import Unsupported


@dataclass
class Ablation:
    """What ``attention_core_ablated`` replaced, and how often the no-op has run since.
    ``replaced``: names of the modules whose whole forward is the no-op (effx's AttentionCore;
    none where the no-op replaces a function inside a module)."""
    method: str
    calls: int = 0
    replaced: tuple[str, ...] = ()


class _ValuesThrough(torch.autograd.Function):
    """q, k, v -> a copy of v. Backward: grad to v, zeros (same shapes) to q and k."""

    @staticmethod
    def forward(ctx, q, k, v):
        ctx.q_shape, ctx.k_shape = q.shape, k.shape
        return v.clone()

    @staticmethod
    def backward(ctx, grad):
        need_q, need_k, _ = ctx.needs_input_grad
        return (grad.new_zeros(ctx.q_shape) if need_q else None,
                grad.new_zeros(ctx.k_shape) if need_k else None, grad)


def _effx_noop(handle: Ablation) -> Callable:
    """The no-op with effx's attention signature: (q, k, v, ...) -> (B, H, T, D)."""
    def noop(q, k, v, *args, **kwargs):
        handle.calls += 1
        return _ValuesThrough.apply(q, k, v)
    return noop


@contextlib.contextmanager
def _patched(obj, attribute: str, value) -> Iterator[None]:
    """Set ``obj.<attribute>`` (an instance attribute) for the block, then restore it."""
    had = attribute in vars(obj)
    before = vars(obj).get(attribute)
    setattr(obj, attribute, value)
    try:
        yield
    finally:
        if had:
            setattr(obj, attribute, before)
        else:
            delattr(obj, attribute)


@contextlib.contextmanager
def _effx_encoder(model: nn.Module, handle: Ablation) -> Iterator[None]:
    from effx.models.encoder import AttentionCore
    cores = {name: m for name, m in model.named_modules() if isinstance(m, AttentionCore)}
    if not cores:
        raise Unsupported(f"{type(model).__name__}: no AttentionCore module to ablate")
    handle.replaced = tuple(cores)
    noop = _effx_noop(handle)
    with contextlib.ExitStack() as stack:
        for core in cores.values():         # the module's forward: hooks around it still run
            stack.enter_context(_patched(core, "forward", noop))
        yield


@contextlib.contextmanager
def _hf_attention_interface(model: nn.Module, handle: Ablation) -> Iterator[None]:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS as interface
    impl = model.config._attn_implementation
    ours = {id(m) for m in model.modules()}
    local = interface._local_mapping      # per-instance overrides (transformers 5.x)
    had, before = impl in local, local.get(impl)

    def original(module):
        if had:
            return before
        if impl == "eager":                 # not in the mapping: each modeling file's default
            return sys.modules[type(module).__module__].eager_attention_forward
        return interface._global_mapping[impl]

    def noop(module, query, key, value, attention_mask, *args, **kwargs):
        if id(module) not in ours:          # another model in this process: untouched
            return original(module)(module, query, key, value, attention_mask, *args, **kwargs)
        handle.calls += 1
        # (B, H, T, D) in; the interface returns (B, T, H, D) contiguous, and no weights
        return _ValuesThrough.apply(query, key, value).transpose(1, 2).contiguous(), None

    local[impl] = noop
    try:
        yield
    finally:
        if had:
            local[impl] = before
        else:
            del local[impl]


@contextlib.contextmanager
def _wav2vec2(model: nn.Module, handle: Ablation) -> Iterator[None]:
    from effx.models.lhubert import SwappedSelfAttention, encoder_layers
    noop = _effx_noop(handle)
    with contextlib.ExitStack() as stack:
        for layer in encoder_layers(model):
            attention = layer.attention
            if isinstance(attention, SwappedSelfAttention):
                stack.enter_context(_patched(attention, "attention", noop))
            else:                            # torchaudio's own: swapped, projections shared
                layer.attention = SwappedSelfAttention(attention, noop, label="ablated")
                stack.callback(setattr, layer, "attention", attention)
        yield


#: root class (module path, class name) -> (how its attention core is ablated, description)
SUPPORTED: dict[tuple[str, str], tuple[Callable, str]] = {
    ("effx.models.encoder", "Encoder"): (_effx_encoder, "AttentionCore.forward -> values"),
    ("effx.models.patch_encoder", "PatchEncoder"): (_effx_encoder, "AttentionCore.forward -> values"),
    ("transformers.models.bert.modeling_bert", "BertModel"):
        (_hf_attention_interface, "transformers attention interface -> values"),
    ("transformers.models.vit.modeling_vit", "ViTModel"):
        (_hf_attention_interface, "transformers attention interface -> values"),
    ("torchaudio.models.wav2vec2.model", "Wav2Vec2Model"):
        (_wav2vec2, "SwappedSelfAttention core -> values"),
}
_INLINE = ("computes its attention inline in {} (transformers 5.x, no attention interface): "
           "a no-op needs a rewrite of that code")
UNSUPPORTED: dict[tuple[str, str], str] = {
    ("transformers.models.longformer.modeling_longformer", "LongformerModel"):
        "Longformer " + _INLINE.format("LongformerSelfAttention.forward (sliding chunks + global)"),
    ("transformers.models.big_bird.modeling_big_bird", "BigBirdModel"):
        "BigBird " + _INLINE.format("BigBirdBlockSparseAttention / BigBirdSelfAttention"),
    ("transformers.models.nystromformer.modeling_nystromformer", "NystromformerModel"):
        "Nystromformer " + _INLINE.format("NystromformerSelfAttention.forward (landmarks, pinv, conv)"),
    ("transformers.models.pvt_v2.modeling_pvt_v2", "PvtV2Model"):
        "PVTv2 " + _INLINE.format("PvtV2SelfAttention.forward (spatial reduction)"),
    ("transformers.models.swin.modeling_swin", "SwinModel"):
        "Swin calls the attention interface, but its attention core (effx.models.components.SWIN) "
        "also holds the block's window partition, cyclic shift, padding and relative position "
        "bias: a no-op attention function would remove only part of it",
}


def ablation_method(model: nn.Module) -> str:
    """How ``attention_core_ablated`` ablates ``model``; Unsupported (with the reason) otherwise."""
    key = (type(model).__module__, type(model).__name__)
    if key in SUPPORTED:
        return SUPPORTED[key][1]
    if key in UNSUPPORTED:
        raise Unsupported(f"attention-core ablation not available: {UNSUPPORTED[key]}")
    raise Unsupported(f"attention-core ablation not available for {key[0]}.{key[1]} "
                      f"(supported roots: {', '.join(name for _, name in SUPPORTED)})")


@contextlib.contextmanager
def attention_core_ablated(model: nn.Module) -> Iterator[Ablation]:
    """Inside the block, ``model``'s attention cores return (a copy of) the values; see the
    module docstring. Raises ``effx.errors.Unsupported`` on entry for models it cannot ablate."""
    handle = Ablation(ablation_method(model))
    ablate = SUPPORTED[(type(model).__module__, type(model).__name__)][0]
    with ablate(model, handle):
        yield handle
