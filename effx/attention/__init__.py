"""Attention variants. Every one is a function with the same call:

    fn(q, k, v, *, key_padding_mask=None, scale=None, **variant_options) -> out

with q, k, v, out of shape (B, H, T, D) and key_padding_mask (B, T) bool (True = real token).
``ATTENTION`` is the registry the encoder and the notebooks look names up in; ``reference``
holds the dense float64 reference that every variant is tested against.
"""
from effx.attention.block_sparse import band_layout, block_sparse_attention
from effx.attention.dense import eager_attention, sdpa_attention
from effx.attention.nystrom import nystrom_attention
from effx.attention.reference import attention_reference
from effx.attention.sliding_window import sliding_window_attention

ATTENTION = {
    "sdpa": sdpa_attention,
    "eager": eager_attention,
    "sliding_window": sliding_window_attention,
    "block_sparse": block_sparse_attention,
    "nystrom": nystrom_attention,
}

__all__ = ["ATTENTION", "attention_reference", "band_layout", "block_sparse_attention",
           "eager_attention", "nystrom_attention", "sdpa_attention", "sliding_window_attention"]
