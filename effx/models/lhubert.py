"""L-HuBERT: HuBERT whose self-attention is local (sliding-window), as in Diwan et al. (ACL 2023).

"When to Use Efficient Self Attention? Profiling Text, Speech and Image Transformer Variants"
replaces every self-attention of HuBERT's Transformer encoder by local attention; the
convolutional waveform encoder, the feed-forward blocks and the weights stay as they are.

Here the swap is generic: ``SwappedSelfAttention`` is a drop-in for torchaudio's
``wav2vec2.components.SelfAttention`` (same ``q_proj/k_proj/v_proj/out_proj`` modules, shared,
so the weights are the original ones; same ``forward(x, attention_mask, position_bias,
key_padding_mask) -> (out, None)``) whose attention core is any effx attention function with
the shared signature ``fn(q, k, v, *, key_padding_mask=None, scale=None, **kw)``, layout
(B, H, T, D). L-HuBERT plugs in ``sliding_window_attention``; an "eager" HuBERT plugs in the
textbook dense attention of ``effx.attention.dense``.

Units: one frame of HuBERT's encoder = 20 ms of 16 kHz audio (the convolutional feature encoder
has a total stride of 320 samples and a receptive field of 400 samples = 25 ms). ``window`` is
counted in frames on each side: query frame i sees key frames j with |i - j| <= window, so the
default 64 gives 129 frames = 2.58 s of context.

Padding: torchaudio never hands ``key_padding_mask`` to its layers; with ``lengths`` it builds an
additive (B, 1, T, T) mask (-10000 on padded key frames, the same in every row, an expanded view)
and passes it as ``attention_mask``. We read the padded keys off its first row.
Attention dropout is not applied by the swapped module (the effx attention functions have none):
use these models in eval mode, as the cost studies do.
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch
from torch import nn
from torchaudio.models.wav2vec2.components import SelfAttention

from effx.attention.dense import eager_attention
from effx.attention.sliding_window import sliding_window_attention

SAMPLE_RATE = 16_000
DEFAULT_WINDOW = 64  # frames each side (1.28 s each side)


def valid_keys(attention_mask: torch.Tensor | None, key_padding_mask: torch.Tensor | None,
               batch: int, length: int) -> torch.Tensor | None:
    """(B, T) bool, True = real frame, from torchaudio's masks; None when nothing is padded.

    attention_mask: torchaudio's additive (B, 1, T, T) key-padding mask (rows identical).
    key_padding_mask: (B, T) bool, True = padded (the WavLM convention), if a caller passes one.
    """
    keep = None
    if attention_mask is not None:
        if attention_mask.shape != (batch, 1, length, length):
            raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)}; "
                             f"expected ({batch}, 1, {length}, {length})")
        keep = attention_mask[:, 0, 0, :] == 0                            # (B, T)
    if key_padding_mask is not None:
        real = ~key_padding_mask.bool()
        keep = real if keep is None else keep & real
    return keep


class SwappedSelfAttention(nn.Module):
    """torchaudio ``SelfAttention`` with its attention core replaced by ``attention``.

    The projections are the original module's (shared, not copied). ``label`` names the core
    for ``describe`` (e.g. ``"sliding_window"``); ``attention_kwargs`` go to every call
    (e.g. ``window=64, backend="auto"``).
    """

    def __init__(self, original: SelfAttention, attention: Callable, *, label: str,
                 **attention_kwargs):
        super().__init__()
        self.embed_dim, self.num_heads = original.embed_dim, original.num_heads
        self.head_dim, self.scaling = original.head_dim, original.scaling
        self.dropout = original.dropout           # kept for reference; not applied (see module doc)
        self.q_proj, self.k_proj = original.q_proj, original.k_proj
        self.v_proj, self.out_proj = original.v_proj, original.out_proj
        self.attention, self.label, self.attention_kwargs = attention, label, attention_kwargs

    def forward(self, x, attention_mask=None, position_bias=None, key_padding_mask=None):
        """x: (B, T, C) -> ((B, T, C), None), like torchaudio's SelfAttention."""
        b, t, _ = x.shape
        shape = (b, t, self.num_heads, self.head_dim)
        q = self.q_proj(x).view(shape).transpose(1, 2)                    # (B, H, T, D)
        k = self.k_proj(x).view(shape).transpose(1, 2)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        keep = valid_keys(attention_mask, key_padding_mask, b, t)
        out = self.attention(q, k, v, key_padding_mask=keep, scale=self.scaling,
                             **self.attention_kwargs)                     # (B, H, T, D)
        out = out.transpose(1, 2).reshape(b, t, self.embed_dim)
        return self.out_proj(out), None

    def extra_repr(self) -> str:
        kw = ", ".join(f"{k}={v!r}" for k, v in self.attention_kwargs.items())
        return f"label={self.label!r}, heads={self.num_heads}, head_dim={self.head_dim}, {kw}"


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The Transformer layers of a torchaudio Wav2Vec2Model (HuBERT)."""
    return model.encoder.transformer.layers


def swap_attention(model: nn.Module, attention: Callable, *, label: str, inplace: bool = False,
                   **attention_kwargs) -> nn.Module:
    """Replace the self-attention of every encoder layer. Weights are kept (shared)."""
    model = model if inplace else copy.deepcopy(model)
    for layer in encoder_layers(model):
        original = layer.attention
        if isinstance(original, SwappedSelfAttention):                    # swap again: keep weights
            original = _as_plain(original)
        layer.attention = SwappedSelfAttention(original, attention, label=label, **attention_kwargs)
    return model


def _as_plain(swapped: SwappedSelfAttention) -> SelfAttention:
    plain = SelfAttention(swapped.embed_dim, swapped.num_heads, dropout=swapped.dropout)
    plain.q_proj, plain.k_proj = swapped.q_proj, swapped.k_proj
    plain.v_proj, plain.out_proj = swapped.v_proj, swapped.out_proj
    return plain


def to_lhubert(model: nn.Module, *, window: int = DEFAULT_WINDOW, backend: str = "auto",
               inplace: bool = False) -> nn.Module:
    """HuBERT -> L-HuBERT: sliding-window attention, ``window`` frames (20 ms each) each side."""
    if not isinstance(window, int) or window < 0:
        raise ValueError(f"window={window!r}; allowed: an integer >= 0 (frames each side)")
    return swap_attention(model, sliding_window_attention, label="sliding_window",
                          inplace=inplace, window=window, backend=backend)


def to_eager(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """HuBERT with textbook (eager) dense attention instead of torchaudio's fused SDPA call."""
    return swap_attention(model, eager_attention, label="eager", inplace=inplace)


def attention_label(model: nn.Module) -> str:
    """'sdpa' (torchaudio's own F.scaled_dot_product_attention) or the swapped core's label."""
    first = encoder_layers(model)[0].attention
    return first.label if isinstance(first, SwappedSelfAttention) else "sdpa"


def frame_stride(model: nn.Module) -> int:
    """Waveform samples per encoder frame (320 = 20 ms at 16 kHz for HuBERT)."""
    return math.prod(block.stride for block in model.feature_extractor.conv_layers)


def frames_for_samples(model: nn.Module, samples: int) -> int:
    """Encoder frames produced from ``samples`` waveform samples (0 if too short)."""
    n = samples
    for block in model.feature_extractor.conv_layers:                 # floor((n - k) / s) + 1
        n = max(0, (n - block.kernel_size) // block.stride + 1)
    return n
