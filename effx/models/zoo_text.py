"""Text models of the zoo: BERT (vanilla) and Longformer, BigBird, Nystromformer (efficient).

Hugging Face ``transformers`` models built from configs with random weights (offline). Each
model has ``build_*(size, attn_implementation, **overrides)``, ``*_inputs(model, batch, length,
device, dtype)`` (length in tokens) and ``describe_*(model, inputs)``; ``effx.models.zoo``
registers them. Facts below were read in transformers 5.23's sources.

- Position tables: the published configs stop at 512 (BERT, Nystromformer) or 4096 tokens
  (Longformer, BigBird). Random weights make the size free to choose, so every text model here
  gets ``MAX_TOKENS`` = 16384 positions (override ``max_position_embeddings``); only parameter
  memory grows (16384 x 768 floats = 50 MB). Longer inputs raise ``Unsupported``.
- Longformer pads every input to a multiple of ``attention_window`` (512; ``_pad_to_window_size``):
  cost moves in steps. ``describe`` reports the padded length. One global token (position 0,
  as HF's LongformerForSequenceClassification sets for [CLS]).
- BigBird: ``BigBirdModel.forward`` switches block_sparse -> original_full when
  ``seq_length <= (5 + 2 * num_random_blocks) * block_size`` (704 by default), by calling
  ``set_attention_type``; the switch sticks on the model (``model.attention_type`` and each
  layer's attention module; ``config.attention_type`` is left untouched), so a later long
  input would also run full attention. Our forward pre-hook sets the type from the actual
  input length before every call, so nothing sticks. In eval mode the "random" blocks are
  all block 0 (``_bigbird_block_rand_mask`` returns zeros when not training): same cost.
  block_sparse pads to a multiple of ``block_size`` (64).
- Nystromformer: each layer takes its full-attention branch iff ``num_landmarks ==
  config.segment_means_seq_len`` (64 == 64 in the published configs), whatever the input
  length; the Nystrom branch reshapes keys into ``(num_landmarks, segment_means_seq_len //
  num_landmarks)`` segments, so ``segment_means_seq_len`` must equal the input length. Our
  pre-hook sets it (the layers' ``seq_len``) from the actual input; inputs are padded up to a
  multiple of ``num_landmarks`` with [PAD] ids, unmasked (HF 5.23 crashes on a padding mask in
  the Nystrom branch, see ``nystromformer_inputs``). Half-precision weights crash HF's Nystrom
  branch (``iterative_inv`` adds a float32 ``torch.eye``): the hook raises ``Unsupported``.
"""
from __future__ import annotations

import math

import torch
import transformers as hf

from effx.errors import Unsupported

MAX_TOKENS = 16384
FIRST_ID = 5  # random token ids avoid the special ids (pad = 0 or 1 in these vocabularies)

_TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
SIZES = {"base": _BASE, "tiny": _TINY}


def _config(cls, size: str, overrides: dict, **published):
    return cls(**{**published, **SIZES[size], **overrides})


def _round_up(length, multiple: int) -> int | None:
    """length rounded up to a multiple (None for a non-integer: _check_tokens then says why)."""
    ok = isinstance(length, int) and not isinstance(length, bool)
    return math.ceil(length / multiple) * multiple if ok else None


def _sequence_length(args, kwargs) -> int:
    x = kwargs.get("input_ids", args[0] if args else None)
    x = kwargs.get("inputs_embeds") if x is None else x
    return x.shape[1]


# ---------------------------------------------------------------- BERT (vanilla baseline)
def build_bert(size: str, attn_implementation: str, **overrides):
    """bert-base (12 x 768, 12 heads); attention "sdpa" (fused) or "eager" (matmul-softmax)."""
    cfg = _config(hf.BertConfig, size, overrides, vocab_size=30522,
                  max_position_embeddings=MAX_TOKENS, attn_implementation=attn_implementation)
    return hf.BertModel(cfg).eval()


def _check_tokens(model, length, padded: int | None = None, offset: int = 0) -> int:
    """Validate a token count; Unsupported when the (padded) input exceeds the position table."""
    if not isinstance(length, int) or isinstance(length, bool) or length < 1:
        raise ValueError(f"length={length!r}; allowed: an integer number of tokens >= 1")
    tokens = length if padded is None else padded
    limit = model.config.max_position_embeddings - offset
    if tokens > limit:
        raise Unsupported(f"{type(model).__name__}: {tokens} tokens (padded) > {limit} positions "
                          "(build with a larger max_position_embeddings)")
    return length


def _ids(model, batch: int, length: int, device) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(FIRST_ID, model.config.vocab_size, (batch, length), generator=g)
    return ids.to(device)


def text_inputs(model, batch, length, device="cpu", dtype=None):
    """{'input_ids': (B, T)} random ids; dtype unused (ids are integers)."""
    _check_tokens(model, length)
    return {"input_ids": _ids(model, batch, length, device)}


def describe_bert(model, inputs):
    t = inputs["input_ids"].shape[1]
    impl = model.config._attn_implementation
    return {"attention_path": f"dense_{impl}", "attn_implementation": impl,
            "sequence_length": t, "padded_length": t}


# ---------------------------------------------------------------- Longformer
def build_longformer(size: str, attn_implementation: str, **overrides):
    """longformer-base (RoBERTa-style, window 512 = 256 each side); its own attention code."""
    cfg = _config(hf.LongformerConfig, size, overrides, vocab_size=50265, attention_window=512,
                  max_position_embeddings=MAX_TOKENS + 2, pad_token_id=1)
    return hf.LongformerModel(cfg).eval()


def _longformer_window(model) -> int:
    w = model.config.attention_window
    return w if isinstance(w, int) else max(w)


def longformer_inputs(model, batch, length, device="cpu", dtype=None):
    """input_ids plus global attention on token 0 (the [CLS] of classification)."""
    w = _longformer_window(model)
    _check_tokens(model, length, _round_up(length, w), offset=2)  # RoBERTa positions start at 2
    ids = _ids(model, batch, length, device)
    global_mask = torch.zeros_like(ids)
    global_mask[:, 0] = 1
    return {"input_ids": ids, "global_attention_mask": global_mask}


def describe_longformer(model, inputs):
    t = inputs["input_ids"].shape[1]
    w = _longformer_window(model)
    g = int(inputs["global_attention_mask"][0].sum()) if "global_attention_mask" in inputs else 0
    return {"attention_path": f"sliding_chunks(window={w})+global({g})",
            "attn_implementation": "longformer", "sequence_length": t,
            "padded_length": math.ceil(t / w) * w}                     # _pad_to_window_size


# ---------------------------------------------------------------- BigBird
def bigbird_full_threshold(config) -> int:
    """BigBirdModel.forward runs original_full when seq_length <= this (704 by default)."""
    return (5 + 2 * config.num_random_blocks) * config.block_size


def bigbird_path(config, requested: str, seq_length: int) -> str:
    """The attention type HF really runs for this length (its switch, made explicit)."""
    if requested == "block_sparse" and seq_length <= bigbird_full_threshold(config):
        return "original_full"
    return requested


def _bigbird_reset(model, args, kwargs):
    """Forward pre-hook: set the attention type from this call's length, so no switch sticks."""
    model.set_attention_type(bigbird_path(model.config, model.config.attention_type,
                                          _sequence_length(args, kwargs)))


def build_bigbird(size: str, attn_implementation: str, **overrides):
    """bigbird-roberta-base sizes, block_sparse, block 64, 3 random blocks; its own attention."""
    cfg = _config(hf.BigBirdConfig, size, overrides, vocab_size=50358, attention_type="block_sparse",
                  block_size=64, num_random_blocks=3, max_position_embeddings=MAX_TOKENS)
    model = hf.BigBirdModel(cfg).eval()
    model.register_forward_pre_hook(_bigbird_reset, with_kwargs=True)
    model.encoder.layer[0].attention.register_forward_pre_hook(_bigbird_observe)
    return model


def _bigbird_observe(attention, args):
    """Forward pre-hook on the first layer's BigBirdAttention (a module the switch keeps): note
    the class of the attention that really runs in this call, read from the module itself."""
    observed = type(attention.self).__name__
    attention._effx_ran = {"BigBirdBlockSparseAttention": "block_sparse",
                           "BigBirdSelfAttention": "original_full"}.get(observed, observed)


def bigbird_inputs(model, batch, length, device="cpu", dtype=None):
    """{'input_ids': (B, T)}; block_sparse pads to a multiple of block_size, which must fit."""
    bs = model.config.block_size
    _check_tokens(model, length, _round_up(length, bs))
    return {"input_ids": _ids(model, batch, length, device)}


def describe_bigbird(model, inputs):
    t = inputs["input_ids"].shape[1]
    path = bigbird_path(model.config, model.config.attention_type, t)
    bs = model.config.block_size
    padded = math.ceil(t / bs) * bs if path == "block_sparse" else t   # _pad_to_block_size
    ran = getattr(model.encoder.layer[0].attention, "_effx_ran", None)   # set once it has run
    return {"attention_path": path, "attention_path_observed": ran or "not run yet",
            "attn_implementation": "bigbird", "sequence_length": t, "padded_length": padded,
            "full_attention_up_to": bigbird_full_threshold(model.config)}


# ---------------------------------------------------------------- Nystromformer
def _nystrom_set_length(model, args, kwargs):
    """Forward pre-hook: segment_means_seq_len := the actual input length (Nystrom branch)."""
    t = _sequence_length(args, kwargs)
    m = model.config.num_landmarks
    if t % m:
        raise Unsupported(f"Nystromformer: length {t} is not a multiple of num_landmarks={m} "
                          "(use the zoo's make_inputs, which pads)")
    dtype = model.embeddings.word_embeddings.weight.dtype
    if t != m and dtype != torch.get_default_dtype():
        raise Unsupported(f"Nystromformer in {dtype}: HF's iterative_inv builds its identity with "
                          "torch.eye in the default dtype (float32) and the matmul fails; "
                          "run float32 weights (torch.autocast works)")
    model.config.segment_means_seq_len = t
    for layer in model.encoder.layer:
        layer.attention.self.seq_len = t


def build_nystromformer(size: str, attn_implementation: str, **overrides):
    """nystromformer-512 sizes, 64 landmarks, conv kernel 65; its own attention."""
    cfg = _config(hf.NystromformerConfig, size, overrides, vocab_size=30000, num_landmarks=64,
                  conv_kernel_size=65, max_position_embeddings=MAX_TOKENS)
    model = hf.NystromformerModel(cfg).eval()
    model.register_forward_pre_hook(_nystrom_set_length, with_kwargs=True)
    return model


def nystromformer_inputs(model, batch, length, device="cpu", dtype=None):
    """input_ids padded with [PAD] ids up to a multiple of num_landmarks, NOT masked.

    HF 5.23 crashes on a padding mask in the Nystrom branch: ``create_bidirectional_mask``
    makes it (B, 1, T, T), which does not broadcast onto the (B, H, landmarks, T) scores it is
    added to. Unmasked [PAD] tokens cost exactly what masked ones would (the mask is one add).
    """
    m = model.config.num_landmarks
    padded = _round_up(length, m)
    _check_tokens(model, length, padded)
    ids = _ids(model, batch, padded, device)
    ids[:, length:] = model.config.pad_token_id
    return {"input_ids": ids}


def describe_nystromformer(model, inputs):
    ids = inputs["input_ids"]
    padded = ids.shape[1]
    real = int((ids != model.config.pad_token_id).sum(dim=1).max())    # ids are drawn >= FIRST_ID
    m = model.config.num_landmarks
    path = "full" if padded == m else f"nystrom(landmarks={m})"        # num_landmarks == seq_len
    return {"attention_path": path, "attn_implementation": "nystromformer",
            "sequence_length": real, "padded_length": padded}
