"""Models of the efficient-Transformer studies.

- ``encoder``: effx's own Transformer encoder, written once, with the attention as a parameter
  (the controlled comparison: only the attention changes).
- ``zoo``: the reference-model zoo (Hugging Face and torchaudio models built from configs with
  random weights, offline) behind the tipping-point and cost-breakdown studies of Diwan et al.
  (ACL 2023): ``ZOO``, ``ZooEntry``, ``get_entry``, ``models_for``; one file per modality
  (``zoo_text``, ``zoo_speech``, ``zoo_vision``).
- ``lhubert``: L-HuBERT, HuBERT with sliding-window self-attention (``to_lhubert``).

The zoo's names are imported lazily: ``import effx.models.encoder`` does not load transformers
or torchaudio.
"""
from __future__ import annotations

import importlib

_LAZY = {"ZOO": "zoo", "ZooEntry": "zoo", "get_entry": "zoo", "models_for": "zoo",
         "to_lhubert": "lhubert"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"effx.models.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'effx.models' has no attribute {name!r}")


__all__ = sorted(_LAZY)
