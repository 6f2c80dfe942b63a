"""Speech models of the zoo: HuBERT (vanilla, torchaudio) and L-HuBERT (sliding-window attention).

Input: a 16 kHz waveform (B, samples); length in seconds. The convolutional feature encoder
turns it into frames of 20 ms (stride 320 samples, receptive field 400), which the Transformer
encoder attends over: ``sequence_length`` in ``describe`` counts frames, and nothing is padded.

- ``hubert`` "base" = ``torchaudio.models.hubert_base()`` exactly (same builder arguments,
  spelled out in ``HUBERT_BASE`` so that sizes can be overridden), but with
  ``encoder_layer_drop=0``: LayerDrop would skip random layers in train mode and make training
  cost random. Random weights, eval mode.
- attention: torchaudio's layers call ``F.scaled_dot_product_attention`` ("sdpa"); with
  ``attn_implementation="eager"`` they are swapped for textbook dense attention
  (``effx.attention.dense.eager_attention``), the 2023-style baseline.
- ``lhubert``: ``effx.models.lhubert.to_lhubert`` (window in frames each side, default 64).
"""
from __future__ import annotations

import torch
from torchaudio.models import wav2vec2_model

from effx.attention import sliding_window as sw
from effx.models import lhubert
from effx.errors import Unsupported

HUBERT_BASE = dict(  # torchaudio.models.hubert_base(), encoder_layer_drop 0.05 -> 0
    extractor_mode="group_norm", extractor_conv_layer_config=None, extractor_conv_bias=False,
    encoder_embed_dim=768, encoder_projection_dropout=0.1, encoder_pos_conv_kernel=128,
    encoder_pos_conv_groups=16, encoder_num_layers=12, encoder_num_heads=12,
    encoder_attention_dropout=0.1, encoder_ff_interm_features=3072, encoder_ff_interm_dropout=0.0,
    encoder_dropout=0.1, encoder_layer_norm_first=False, encoder_layer_drop=0.0, aux_num_out=None,
)
# Same strides and kernels (20 ms frames), narrow channels, 2 layers.
_TINY_CONV = [(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2
HUBERT_TINY = {**HUBERT_BASE, "extractor_conv_layer_config": _TINY_CONV, "encoder_embed_dim": 64,
               "encoder_num_layers": 2, "encoder_num_heads": 4, "encoder_ff_interm_features": 128}
SIZES = {"base": HUBERT_BASE, "tiny": HUBERT_TINY}


def build_hubert(size: str, attn_implementation: str, **overrides):
    """HuBERT-base (torchaudio); overrides are ``wav2vec2_model`` arguments."""
    model = wav2vec2_model(**{**SIZES[size], **overrides}).eval()
    if attn_implementation == "eager":
        model = lhubert.to_eager(model, inplace=True)
    return model


def build_lhubert(size: str, attn_implementation: str, *, window: int = lhubert.DEFAULT_WINDOW,
                  backend: str = "auto", **overrides):
    """L-HuBERT: HuBERT with sliding-window attention (``window`` frames each side).

    ``attn_implementation`` does not apply (the attention is effx's sliding window).
    """
    model = wav2vec2_model(**{**SIZES[size], **overrides}).eval()
    return lhubert.to_lhubert(model, window=window, backend=backend, inplace=True)


def speech_inputs(model, batch, length, device="cpu", dtype=torch.float32):
    """{'waveforms': (B, samples)}, samples = round(length seconds * 16000), all real (no lengths)."""
    if isinstance(length, bool) or not isinstance(length, (int, float)) or length <= 0:
        raise ValueError(f"length={length!r}; allowed: seconds of audio > 0")
    samples = round(length * lhubert.SAMPLE_RATE)
    if lhubert.frames_for_samples(model, samples) < 1:
        raise Unsupported(f"{length} s = {samples} samples gives no 20 ms frame "
                          "(the feature encoder needs 400 samples = 25 ms)")
    g = torch.Generator().manual_seed(0)
    wave = torch.randn(batch, samples, generator=g)
    return {"waveforms": wave.to(device=device, dtype=dtype or torch.float32)}


def describe_speech(model, inputs):
    wave = inputs["waveforms"]
    samples = wave.shape[1]
    frames = lhubert.frames_for_samples(model, samples)
    label = lhubert.attention_label(model)
    info = {"attention_path": f"dense_{label}", "attn_implementation": label,
            "sequence_length": frames, "padded_length": frames, "samples": samples,
            "frame_ms": 1000 * lhubert.frame_stride(model) / lhubert.SAMPLE_RATE}
    if label == "sliding_window":
        kw = lhubert.encoder_layers(model)[0].attention.attention_kwargs
        backend = sw.resolve_backend(kw["backend"], wave)
        info.update(attention_path=f"sliding_window(window={kw['window']},backend={backend})",
                    window_frames=kw["window"])
    return info
