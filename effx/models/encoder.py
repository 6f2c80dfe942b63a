"""effx's own Transformer encoder, written once, with the attention as a parameter.

The controlled comparison of the tipping-point study: every variant has the same widths, depth,
embeddings and feed-forward; only the attention function (a name in ``effx.attention.ATTENTION``
plus its options) changes. Pre-LayerNorm blocks, sinusoidal positions (no length limit).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from effx.attention import ATTENTION
from effx.attention.block_sparse import band_layout
from effx.errors import ParameterError


@dataclass
class EncoderConfig:
    d_model: int = 768
    n_heads: int = 12
    n_layers: int = 12
    d_ff: int = 3072
    vocab_size: int = 30522
    attention: str = "sdpa"
    #: options of the attention function, e.g. {"window": 256} or {"block": 64, "band": 1}
    attention_options: dict = field(default_factory=dict)
    dropout: float = 0.0

    def __post_init__(self):
        if self.attention not in ATTENTION:
            raise ParameterError("attention", self.attention, ", ".join(ATTENTION))
        if self.d_model % self.n_heads:
            raise ParameterError("d_model", self.d_model, f"a multiple of n_heads={self.n_heads}")


def sinusoidal_positions(t: int, d: int, device=None, dtype=torch.float32) -> torch.Tensor:
    pos = torch.arange(t, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(t, d, device=device)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
    return pe.to(dtype)


class SelfAttention(nn.Module):
    """Q/K/V projections -> attention core (the pluggable part) -> output projection."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.n_heads, self.cfg = cfg.n_heads, cfg
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.core = AttentionCore(cfg)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x, key_padding_mask=None):
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        y = self.core(q, k, v, key_padding_mask)                           # (B, H, T, Dh)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class AttentionCore(nn.Module):
    """The attention function as a module, so profilers and hooks can see it as one component."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.name, self.options = cfg.attention, dict(cfg.attention_options)
        self.fn = ATTENTION[cfg.attention]

    def forward(self, q, k, v, key_padding_mask=None):
        opts = dict(self.options)
        if self.name == "block_sparse":                      # layout depends on T: a band of blocks
            block, band = opts.pop("block", 64), opts.pop("band", 1)
            nb = math.ceil(q.shape[2] / block)
            opts.update(block=block, layout=band_layout(nb, band, device=q.device))
        return self.fn(q, k, v, key_padding_mask=key_padding_mask, **opts)


class FeedForward(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.up, self.down = nn.Linear(cfg.d_model, cfg.d_ff), nn.Linear(cfg.d_ff, cfg.d_model)

    def forward(self, x):
        return self.down(F.gelu(self.up(x)))


class Block(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(cfg.d_model), SelfAttention(cfg)
        self.ln2, self.ffn = nn.LayerNorm(cfg.d_model), FeedForward(cfg)

    def forward(self, x, key_padding_mask=None):
        x = x + self.attn(self.ln1(x), key_padding_mask)
        return x + self.ffn(self.ln2(x))


class Encoder(nn.Module):
    """Token ids (B, T) -> hidden states (B, T, d_model)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)

    def forward(self, input_ids, key_padding_mask=None):
        x = self.embed(input_ids)
        x = x + sinusoidal_positions(x.shape[1], x.shape[2], x.device, x.dtype)
        for block in self.blocks:
            x = block(x, key_padding_mask)
        return self.ln_f(x)


def encoder_flops(cfg: EncoderConfig, batch: int, t: int, keys_per_query: float | None = None) -> dict[str, float]:
    """Analytic forward FLOPs per component (2 FLOPs per multiply-add).

    keys_per_query: keys each query attends to (T for dense; the variant's count otherwise).
    """
    d, f, h, L = cfg.d_model, cfg.d_ff, cfg.n_heads, cfg.n_layers
    k = t if keys_per_query is None else keys_per_query
    tokens = batch * t
    return {
        "qkv_projection": L * 2 * tokens * d * 3 * d,
        "attention_core": L * 4 * batch * h * t * k * (d // h),
        "output_projection": L * 2 * tokens * d * d,
        "feed_forward": L * 2 * tokens * 2 * d * f,
    }
