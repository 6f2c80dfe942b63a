"""Vision models of the zoo: ViT-B/16 (vanilla) and Swin, PVTv2 (efficient).

Length = the side of a square image in pixels; inputs are (B, 3, side, side) random pixels.
Facts below were read in transformers 5.23's sources.

- ViT-B/16: 224-pixel position table. ``ViTEmbeddings`` refuses other sides unless
  ``interpolate_pos_encoding=True``, which bicubically resizes the table inside the forward (its
  small cost is part of what is timed); we pass it for every side other than ``image_size``.
  Sides must be multiples of the patch (16). Tokens = (side / 16)^2 + 1 ([CLS]).
- Swin (window attention, 7 x 7 windows, shifted every other layer). Base = Swin-B (embed 128,
  depths 2-2-18-2), chosen for parameter parity with ViT-B (88M vs 86M). HF pads each stage to
  a multiple of the window (``SwinLayer.maybe_pad``), and ``set_shift_and_window_size`` clamps the
  window to the stage resolution when that is <= 7 and sets shift 0 -- and the change sticks on
  the layer: after a 224-pixel image (last stage 7 x 7) the last stage's shifted layers stay
  unshifted for larger images. Our forward pre-hook restores the built window and shift
  before every call. A last stage smaller than the window crashes HF (the relative position
  table is 7 x 7), so sides must be multiples of 32 (patch 4 x 2^3 merges) and >= 224.
- PVTv2 (spatial-reduction attention: keys and values pooled by a strided conv, ratios
  8, 4, 2, 1 per stage). Base = pvt_v2_b5 (82M parameters, depths 3-6-40-3, as published by
  its authors), again for parity with ViT-B. Sides must be multiples of 32 so that every stage
  and every reduction divide exactly. PvtV2 has no SDPA path in HF: its attention is eager.
"""
from __future__ import annotations

import math

import torch
import transformers as hf

from effx.errors import Unsupported

VIT = {"base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=3072),
       "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=128)}
SWIN = {"base": dict(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32]),
        "tiny": dict(embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8])}
PVT_V2 = {"base": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 6, 40, 3],
                       num_attention_heads=[1, 2, 5, 8], mlp_ratios=[4, 4, 4, 4]),
          "tiny": dict(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
                       num_attention_heads=[1, 2, 4, 8], mlp_ratios=[2, 2, 2, 2])}


def _check_side(model, side, multiple: int, minimum: int) -> int:
    if not isinstance(side, int) or isinstance(side, bool) or side < 1:
        raise ValueError(f"length={side!r}; allowed: an image side in pixels (integer >= 1)")
    if side % multiple or side < minimum:
        raise Unsupported(f"{type(model).__name__}: side {side} px; needs a multiple of "
                          f"{multiple} px, at least {minimum} px")
    return side


def _pixels(batch, side, device, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, side, side, generator=g)
    return x.to(device=device, dtype=dtype or torch.float32)


# ---------------------------------------------------------------- ViT (vanilla baseline)
def build_vit(size: str, attn_implementation: str, **overrides):
    """ViT-B/16 at 224 px; attention "sdpa" or "eager"."""
    cfg = hf.ViTConfig(**{"image_size": 224, "patch_size": 16, **VIT[size], **overrides,
                          "attn_implementation": attn_implementation})
    return hf.ViTModel(cfg).eval()


def vit_inputs(model, batch, length, device="cpu", dtype=torch.float32):
    p = model.config.patch_size
    side = _check_side(model, length, p, p)
    return {"pixel_values": _pixels(batch, side, device, dtype),
            "interpolate_pos_encoding": side != model.config.image_size}


def describe_vit(model, inputs):
    side = inputs["pixel_values"].shape[-1]
    t = (side // model.config.patch_size) ** 2 + 1
    impl = model.config._attn_implementation
    return {"attention_path": f"dense_{impl}", "attn_implementation": impl,
            "sequence_length": t, "padded_length": t,
            "interpolate_pos_encoding": bool(inputs.get("interpolate_pos_encoding", False))}


# ---------------------------------------------------------------- Swin
def _swin_reset(model, args, kwargs):
    """Forward pre-hook: restore built window/shift sizes (HF's clamping otherwise sticks)."""
    ws = model.config.window_size
    for stage in model.encoder.layers:
        for i, block in enumerate(stage.blocks):
            block.window_size, block.shift_size = ws, (0 if i % 2 == 0 else ws // 2)


def build_swin(size: str, attn_implementation: str, **overrides):
    """Swin-B (window 7, patch 4, 224 px); attention "sdpa" or "eager" inside the windows."""
    cfg = hf.SwinConfig(**{"image_size": 224, "patch_size": 4, "window_size": 7, **SWIN[size],
                           **overrides, "attn_implementation": attn_implementation})
    model = hf.SwinModel(cfg).eval()
    model.register_forward_pre_hook(_swin_reset, with_kwargs=True)
    return model


def _swin_reduction(config) -> int:
    return config.patch_size * 2 ** (len(config.depths) - 1)


def swin_inputs(model, batch, length, device="cpu", dtype=torch.float32):
    c = model.config
    r = _swin_reduction(c)
    side = _check_side(model, length, r, r * c.window_size)
    return {"pixel_values": _pixels(batch, side, device, dtype)}


def swin_stages(config, side: int) -> list[dict]:
    """Per stage: resolution, padded resolution, window and shift HF really uses."""
    ws, out = config.window_size, []
    for i in range(len(config.depths)):
        res = side // (config.patch_size * 2 ** i)
        if res <= ws:                                            # set_shift_and_window_size
            out.append({"resolution": res, "padded": res, "window": res, "shift": 0})
        else:                                                    # maybe_pad
            out.append({"resolution": res, "padded": math.ceil(res / ws) * ws, "window": ws,
                        "shift": ws // 2 if config.depths[i] > 1 else 0})
    return out


def describe_swin(model, inputs):
    side = inputs["pixel_values"].shape[-1]
    stages = swin_stages(model.config, side)
    impl = model.config._attn_implementation
    return {"attention_path": f"shifted_window({model.config.window_size})_{impl}",
            "attn_implementation": impl, "sequence_length": stages[0]["resolution"] ** 2,
            "padded_length": stages[0]["padded"] ** 2, "stages": stages}


# ---------------------------------------------------------------- PVTv2
def build_pvt_v2(size: str, attn_implementation: str, **overrides):
    """pvt_v2_b5 (spatial-reduction attention, ratios 8/4/2/1); eager attention only."""
    cfg = hf.PvtV2Config(**{"image_size": 224, "sr_ratios": [8, 4, 2, 1], **PVT_V2[size],
                            **overrides})
    return hf.PvtV2Model(cfg).eval()


def _pvt_reduction(config) -> int:
    return math.prod(config.strides)


def pvt_v2_inputs(model, batch, length, device="cpu", dtype=torch.float32):
    r = _pvt_reduction(model.config)
    side = _check_side(model, length, r, r)
    return {"pixel_values": _pixels(batch, side, device, dtype)}


def describe_pvt_v2(model, inputs):
    c = model.config
    side = inputs["pixel_values"].shape[-1]
    res = side // c.strides[0]
    keys = (res // c.sr_ratios[0]) ** 2 if not c.linear_attention else 49
    ratios = ",".join(str(s) for s in c.sr_ratios)
    return {"attention_path": f"spatial_reduction(sr={ratios})",
            "attn_implementation": c._attn_implementation or "eager",
            "sequence_length": res ** 2, "padded_length": res ** 2, "keys_per_query": keys}
