"""effx's encoder on image patches: the controlled vision pair of the tipping-point study.

Vision models with efficient attention (Swin, PVTv2) differ from ViT in much more than attention
(hierarchical stages, convolutions, patch merging), so a ViT-vs-Swin tipping point mixes the two.
Here only attention changes: ViT-B/16's patch embedding (a 16x16 stride-16 convolution) feeds
effx's ``Encoder`` blocks (attention as a parameter), with sinusoidal positions so any image side
works. The efficient variant uses a 1-D sliding window over the raster-ordered patches, a simple
stand-in for Swin's 2-D windows with the same linear cost in the number of patches.
"""
from __future__ import annotations

import torch
from torch import nn

from effx.errors import Unsupported
from effx.models.encoder import Encoder, EncoderConfig, encoder_flops, sinusoidal_positions

PATCH = 16


class PatchEncoder(nn.Module):
    """Pixels (B, 3, S, S) -> hidden states (B, (S/16)^2, d_model)."""

    def __init__(self, cfg: EncoderConfig, patch: int = PATCH, channels: int = 3):
        super().__init__()
        self.cfg, self.patch = cfg, patch
        self.patch_embed = nn.Conv2d(channels, cfg.d_model, kernel_size=patch, stride=patch)
        encoder = Encoder(cfg)
        self.blocks, self.ln_f = encoder.blocks, encoder.ln_f

    def forward(self, pixel_values):
        x = self.patch_embed(pixel_values).flatten(2).transpose(1, 2)          # (B, T, d)
        x = x + sinusoidal_positions(x.shape[1], x.shape[2], x.device, x.dtype)
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)

    def flops(self, batch: int, t: int) -> dict[str, float]:
        """Analytic forward FLOPs of the blocks per component (``encoder_flops``)."""
        return encoder_flops(self.cfg, batch, t, cores=[b.attn.core for b in self.blocks])

    def inputs(self, batch: int, side: int, device, dtype) -> tuple[dict, dict]:
        """Random pixels of a square image; Unsupported unless the side is a multiple of 16."""
        if side % self.patch:
            raise Unsupported(f"PatchEncoder: side {side} px; needs a multiple of {self.patch}")
        x = torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(0))
        t = (side // self.patch) ** 2
        return ({"pixel_values": x.to(device=device, dtype=dtype)},
                {"attention_path": self.cfg.attention, "sequence_length": t, "padded_length": t})
