"""Models and inputs for the profiling studies, by modality: the one place that knows each
modality's length unit, its baseline, and how a model label is built and fed.

Modalities (Diwan et al., ACL 2023, plus two controlled comparisons where only attention changes):

    text                bert vs longformer, bigbird, nystromformer    tokens
    speech              hubert vs lhubert                             seconds of 16 kHz audio
    vision              vit vs swin, pvt_v2                           image side, px
    controlled          effx encoder on tokens: dense_sdpa / dense_eager vs sliding_window,
                        block_sparse, nystrom                         tokens
    controlled_vision   effx encoder on ViT-B/16 patch tokens: vit_dense vs vit_window
                        (a 1-D window over raster-ordered patches: only attention differs)  px

A label ``name:eager`` is a zoo model with eager (matmul-softmax) dense attention instead of
PyTorch's fused SDPA: the 2023 baseline.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from effx.device import resolve_dtype
from effx.models.encoder import Encoder, EncoderConfig
from effx.models.patch_encoder import PatchEncoder


@dataclass(frozen=True)
class Modality:
    name: str
    unit: str            # unit of a length
    axis_label: str      # x-axis text
    baselines: tuple     # the vanilla models (every other model is compared with each)


MODALITIES = {m.name: m for m in (
    Modality("text", "tokens", "input length (tokens)", ("bert", "bert:eager")),
    Modality("speech", "s", "audio length (seconds at 16 kHz)", ("hubert", "hubert:eager")),
    Modality("vision", "px", "image side (pixels)", ("vit", "vit:eager")),
    Modality("controlled", "tokens", "input length (tokens)", ("dense_sdpa", "dense_eager")),
    Modality("controlled_vision", "px", "image side (pixels)", ("vit_dense",)),
)}

#: effx encoder variants of the controlled comparisons: label -> (attention name, options)
CONTROLLED = {
    "dense_sdpa": ("sdpa", {}),
    "dense_eager": ("eager", {}),
    "sliding_window": ("sliding_window", {"window": 256}),
    "block_sparse": ("block_sparse", {"block": 64, "band": 1}),
    "nystrom": ("nystrom", {"num_landmarks": 64}),
}
CONTROLLED_VISION = {"vit_dense": ("sdpa", {}), "vit_window": ("sliding_window", {"window": 49})}


def _zoo():
    from effx.models.zoo import ZOO
    return ZOO


def labels(modality: str) -> list[str]:
    """Every model label of a modality, baselines first."""
    if modality == "controlled":
        return list(CONTROLLED)
    if modality == "controlled_vision":
        return list(CONTROLLED_VISION)
    zoo = _zoo()
    names = [n for n, e in zoo.items() if e.modality == modality]
    names.sort(key=lambda n: zoo[n].baseline is not None)
    bases = [n for n in names if zoo[n].baseline is None]
    return names + [f"{b}:eager" for b in bases]


def pairs(modality: str, models: list[str]) -> list[tuple[str, str]]:
    """(efficient, baseline) among ``models``: each efficient model against every baseline."""
    bases = [b for b in MODALITIES[modality].baselines if b in models]
    return [(m, b) for m in models if m not in MODALITIES[modality].baselines for b in bases]


def option_label(modality: str, label: str, layers: int, lhubert_window: int) -> str:
    """The setting that defines a model besides its label (part of a point's key)."""
    if modality.startswith("controlled"):
        return f"layers={layers}"
    return f"window={lhubert_window}" if label == "lhubert" else ""


@functools.lru_cache(maxsize=8)   # the models of one modality stay warm across its lengths
def build(modality: str, label: str, size: str, device: str, dtype: str, layers: int,
          lhubert_window: int) -> torch.nn.Module:
    """The model behind a label, in eval mode, on ``device`` in ``dtype`` (random weights)."""
    torch_dtype = resolve_dtype(dtype, device)
    if modality.startswith("controlled"):
        attention, options = (CONTROLLED if modality == "controlled" else CONTROLLED_VISION)[label]
        small = dict(d_model=64, n_heads=4, d_ff=128, vocab_size=1000) if size == "tiny" else {}
        cfg = EncoderConfig(n_layers=layers, attention=attention, attention_options=options, **small)
        model = PatchEncoder(cfg) if modality == "controlled_vision" else Encoder(cfg)
        return model.eval().to(device=device, dtype=torch_dtype)
    name, _, attn = label.partition(":")
    overrides = {"window": lhubert_window} if name == "lhubert" else {}
    model = _zoo()[name].build(size=size, attn_implementation=attn or "sdpa", **overrides)
    return model.to(device=device, dtype=torch_dtype)


def release() -> None:
    """Forget the cached models (before the models of another modality are built)."""
    build.cache_clear()


def inputs(modality: str, label: str, model, batch: int, length, device: str, dtype: str):
    """(kwargs for ``model(**kwargs)``, description of what runs). Raises effx.errors.Unsupported
    for lengths the model cannot take."""
    torch_dtype = resolve_dtype(dtype, device)
    if modality == "controlled":
        t = int(length)
        ids = torch.randint(0, model.cfg.vocab_size, (batch, t),
                            generator=torch.Generator().manual_seed(0)).to(device)
        return {"input_ids": ids}, {"attention_path": model.cfg.attention, "sequence_length": t,
                                    "padded_length": t}
    if modality == "controlled_vision":
        return model.inputs(batch, int(length), device, torch_dtype)
    entry = _zoo()[label.split(":")[0]]
    kwargs = entry.make_inputs(model, batch=batch, length=length, device=device, dtype=torch_dtype)
    return kwargs, entry.describe(model, kwargs)
