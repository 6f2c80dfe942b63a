"""Attention variants. Every one is a function with the same call:

    fn(q, k, v, *, key_padding_mask=None, scale=None, **variant_options) -> out

with q, k, v, out of shape (B, H, T, D) and key_padding_mask (B, T) bool (True = real token).
Beside each function its module declares an ``AttentionSpec`` (``effx.attention.spec``): the
options it takes, the per-length call options, the keys a query attends to, the FLOPs counted,
its pattern as a dense mask. ``ATTENTION`` is the registry name -> spec that the encoder, the
studies and the notebooks read; ``ATTENTION[name].fn`` is the plain function (calling the spec
calls it too). ``reference`` holds the dense float64 reference every variant is tested against.
"""
from effx.attention.block_sparse import BLOCK_SPARSE, band_layout, block_sparse_attention
from effx.attention.dense import EAGER, SDPA, eager_attention, sdpa_attention
from effx.attention.nystrom import NYSTROM, nystrom_attention
from effx.attention.reference import attention_reference
from effx.attention.sliding_window import SLIDING_WINDOW, sliding_window_attention
from effx.attention.spec import REQUIRED, AttentionSpec, attention_flops

#: name -> spec, in the order the studies list them
ATTENTION: dict[str, AttentionSpec] = {spec.name: spec for spec in
                                       (SDPA, EAGER, SLIDING_WINDOW, BLOCK_SPARSE, NYSTROM)}

__all__ = ["ATTENTION", "REQUIRED", "AttentionSpec", "attention_flops", "attention_reference",
           "band_layout", "block_sparse_attention", "eager_attention", "nystrom_attention",
           "sdpa_attention", "sliding_window_attention"]
