"""The reference-model zoo of the tipping-point and cost-breakdown studies (Diwan et al., ACL 2023).

"When to Use Efficient Self Attention? Profiling Text, Speech and Image Transformer Variants"
compares each vanilla Transformer with efficient variants of it, per modality:

    text    bert (baseline)      longformer, bigbird, nystromformer          length: tokens
    speech  hubert (baseline)    lhubert (sliding-window HuBERT)             length: seconds
    vision  vit (baseline)       swin, pvt_v2                                length: image side, px

Every model is built from a config with random weights, offline (never a hub download):
random weights cost what trained ones do. One ``ZooEntry`` per model, in the dict ``ZOO``:

    entry = get_entry("bigbird")
    model = entry.build(size="tiny")                     # eval mode; "base" = paper scale
    inputs = entry.make_inputs(model, batch=2, length=1024, device="cpu", dtype=torch.float32)
    out = model(**inputs)
    entry.describe(model, inputs)  # {"attention_path": "block_sparse", "padded_length": 1024, ...}

``describe`` says what really runs for these inputs, which is not always what was asked for:
BigBird falls back to full attention on short inputs, Longformer pads to its window, Nystromformer
needs ``segment_means_seq_len`` = the input length, Swin pads to its windows. The models'
modules (``zoo_text``, ``zoo_speech``, ``zoo_vision``) explain each trap and how it is handled.

``attn_implementation`` ("sdpa" fused / "eager" matmul-softmax) selects the dense attention of
the models that have the choice (BERT, ViT, Swin; HuBERT via an effx swap). Longformer, BigBird,
Nystromformer, PVTv2 and L-HuBERT run their own attention code whatever is asked;
``describe(...)["attn_implementation"]`` records what ran.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from effx.errors import ParameterError
from effx.models import zoo_speech, zoo_text, zoo_vision

SIZES = ("base", "tiny")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
MODALITIES = ("text", "speech", "vision")


@dataclass(frozen=True)
class ZooEntry:
    """One model of the zoo.

    build(size="base"|"tiny", attn_implementation="sdpa"|"eager", **overrides) -> model (eval)
    make_inputs(model, batch, length, device, dtype) -> kwargs for ``model(**kwargs)``;
        length in ``length_unit`` (tokens: int, seconds: float, pixels: int image side).
        Raises effx.errors.Unsupported for lengths the model cannot take.
    describe(model, inputs) -> {"attention_path", "attn_implementation", "sequence_length",
        "padded_length", ...}: what really runs (sequence lengths in tokens / frames / patches).
    """
    name: str
    modality: str
    baseline: str | None
    length_unit: str
    build: Callable[..., torch.nn.Module]
    make_inputs: Callable[..., dict]
    describe: Callable[..., dict]


def _checked(name: str, raw_build: Callable) -> Callable[..., torch.nn.Module]:
    """Validate the shared arguments, then build (offline, random weights, eval mode)."""
    def build(size: str = "base", attn_implementation: str = "sdpa", **overrides):
        if size not in SIZES:
            raise ParameterError("size", size, ", ".join(SIZES), why=f"model {name!r}")
        if attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ParameterError("attn_implementation", attn_implementation,
                                 ", ".join(ATTN_IMPLEMENTATIONS), why=f"model {name!r}")
        return raw_build(size, attn_implementation, **overrides)
    build.__name__ = f"build_{name}"
    build.__doc__ = raw_build.__doc__
    return build


def _entry(name, modality, baseline, unit, build, make_inputs, describe) -> ZooEntry:
    return ZooEntry(name, modality, baseline, unit, _checked(name, build), make_inputs, describe)


_T, _S, _V = zoo_text, zoo_speech, zoo_vision
ZOO: dict[str, ZooEntry] = {e.name: e for e in (
    _entry("bert", "text", None, "tokens", _T.build_bert, _T.text_inputs, _T.describe_bert),
    _entry("longformer", "text", "bert", "tokens", _T.build_longformer, _T.longformer_inputs,
           _T.describe_longformer),
    _entry("bigbird", "text", "bert", "tokens", _T.build_bigbird, _T.bigbird_inputs,
           _T.describe_bigbird),
    _entry("nystromformer", "text", "bert", "tokens", _T.build_nystromformer,
           _T.nystromformer_inputs, _T.describe_nystromformer),
    _entry("hubert", "speech", None, "seconds", _S.build_hubert, _S.speech_inputs,
           _S.describe_speech),
    _entry("lhubert", "speech", "hubert", "seconds", _S.build_lhubert, _S.speech_inputs,
           _S.describe_speech),
    _entry("vit", "vision", None, "pixels", _V.build_vit, _V.vit_inputs, _V.describe_vit),
    _entry("swin", "vision", "vit", "pixels", _V.build_swin, _V.swin_inputs, _V.describe_swin),
    _entry("pvt_v2", "vision", "vit", "pixels", _V.build_pvt_v2, _V.pvt_v2_inputs,
           _V.describe_pvt_v2),
)}


def get_entry(name: str) -> ZooEntry:
    """The zoo entry called ``name``; ParameterError('model', ...) listing the names otherwise."""
    try:
        return ZOO[name]
    except (KeyError, TypeError):
        raise ParameterError("model", name, ", ".join(ZOO)) from None


def models_for(modality: str) -> list[str]:
    """Names of the zoo's models of one modality, baseline first."""
    if modality not in MODALITIES:
        raise ParameterError("modality", modality, ", ".join(MODALITIES))
    names = [n for n, e in ZOO.items() if e.modality == modality]
    return sorted(names, key=lambda n: ZOO[n].baseline is not None)
