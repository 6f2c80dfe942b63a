"""effx's own Transformer encoder, written once, with the attention as a parameter.

The controlled comparison of the tipping-point study: every variant has the same widths, depth,
embeddings and feed-forward; only the attention (a name in ``effx.attention.ATTENTION`` plus its
options) changes. Pre-LayerNorm blocks, sinusoidal positions (no length limit).

Each layer's ``AttentionCore`` reads everything about its variant from the variant's spec (the
per-length call options, the FLOPs), and can be switched on its own at run time:
``block.attn.core.set_attention("block_sparse", layout=L, block=64)`` gives one layer a layout of
its own (SPION). ``encoder_flops`` / ``Encoder.flops`` count each layer's core with its spec.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from effx.attention import ATTENTION
from effx.errors import ParameterError


@dataclass
class EncoderConfig:
    d_model: int = 768
    n_heads: int = 12
    n_layers: int = 12
    d_ff: int = 3072
    vocab_size: int = 30522
    attention: str = "sdpa"
    #: options of the attention's spec, e.g. {"window": 256} or {"block": 64, "band": 1}
    attention_options: dict = field(default_factory=dict)
    dropout: float = 0.0

    def __post_init__(self):
        check_attention(self.attention, self.attention_options)
        if self.d_model % self.n_heads:
            raise ParameterError("d_model", self.d_model, f"a multiple of n_heads={self.n_heads}")


def check_attention(name: str, options: dict):
    """Raise ParameterError unless ``name`` is a registered attention taking ``options``."""
    if name not in ATTENTION:
        raise ParameterError("attention", name, ", ".join(ATTENTION))
    try:
        ATTENTION[name].resolve(**options)
    except ValueError as exc:
        raise ParameterError("attention_options", options, f"the options of {name!r}: "
                             f"{dict(ATTENTION[name].options)}", why=str(exc)) from None


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
    """The attention function as a module, so profilers and hooks can see it as one component.

    ``spec`` and ``options`` say which variant runs; ``set_attention`` swaps them (this layer only).
    """

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.set_attention(cfg.attention, **cfg.attention_options)

    def set_attention(self, name: str, **options) -> "AttentionCore":
        """Use attention ``name`` with ``options`` (checked now) in this layer from now on."""
        check_attention(name, options)
        self.name, self.spec, self.options = name, ATTENTION[name], dict(options)
        return self

    def forward(self, q, k, v, key_padding_mask=None):
        """q, k, v: (B, H, T, Dh) -> (B, H, T, Dh)."""
        opts = self.spec.call_options(q.shape[2], **self.options)
        return self.spec.fn(q, k, v, key_padding_mask=key_padding_mask, **opts)

    def flops(self, batch: int, t: int, head_dim: int, heads: int) -> float:
        """Forward FLOPs of this core at length t, as counted (the spec's formula)."""
        return self.spec.flops(batch, heads, t, head_dim, **self.options)

    def extra_repr(self) -> str:
        return f"{self.name}, {self.spec.label(**self.options)}"


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

    def flops(self, batch: int, t: int) -> dict[str, float]:
        """``encoder_flops`` of this model, each layer's attention core as it is now."""
        return encoder_flops(self.cfg, batch, t, cores=[b.attn.core for b in self.blocks])


def encoder_flops(cfg: EncoderConfig, batch: int, t: int, cores=None) -> dict[str, float]:
    """Analytic forward FLOPs per component (2 FLOPs per multiply-add), as FlopCounterMode counts.

    The attention core is its spec's ``flops`` (effx.attention.spec): the config's attention in
    every layer, or the given ``cores`` (one ``AttentionCore`` per layer, e.g. after
    ``set_attention``).
    """
    d, f, h, L = cfg.d_model, cfg.d_ff, cfg.n_heads, cfg.n_layers
    tokens = batch * t
    if cores is None:
        core = ATTENTION[cfg.attention].flops(batch, h, t, d // h, **cfg.attention_options)
        attention_core = L * core
    else:
        attention_core = sum(c.flops(batch, t, d // h, h) for c in cores)
    return {
        "qkv_projection": L * 2 * tokens * d * 3 * d,
        "attention_core": attention_core,
        "output_projection": L * 2 * tokens * d * d,
        "feed_forward": L * 2 * tokens * 2 * d * f,
    }
