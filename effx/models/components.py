"""Which Transformer component every module of a model belongs to: one table of rules per family.

Diwan et al. (ACL 2023) find that the parts of a Transformer other than attention (embeddings,
feed-forward, and for speech the convolutional waveform encoder) carry a large share of its
cost. To measure that share, every module of a model is assigned to one *component*:

    input              token/position embeddings, speech CNN feature encoder + its projection and
                       convolutional positions, the (first) vision patch embedding
    qkv_projection     the Q, K, V linear maps (Longformer's global ones too)
    attention_core     what the attention module does besides its projections: scores, softmax,
                       weighted sum, or the efficient variant's equivalent (sliding chunks, block
                       gathering, Nystrom landmarks and conv, Swin's window partition/shift and
                       relative bias, PVTv2's spatial-reduction conv)
    output_projection  the linear map after attention
    feed_forward       the MLP (PVTv2's depth-wise conv inside it included)
    norm_residual      layer norms, residual adds, a layer's own glue code, dropouts (no-ops at eval)
    other              pooler/head, stage transitions (Swin patch merging, PVTv2's later patch
                       embeddings), containers and each model's top-level code (masks, padding)

Attribution is *exclusive*: a module's own time/FLOPs are those not spent in its child modules.
So the attention core of a Hugging Face model, which is code inside the attention module rather
than a module of its own, is "the attention module minus its projection submodules".

A rule is ``Rule(component, name=regex)`` (optionally ``cls=regex`` too); a module matches when
every given regex *fully* matches its qualified name (``""`` for the root) or its class name.
Containers (ModuleList) are never called; they are named so that the table covers every module. The rules of
a family are written so that every module matches exactly one rule: ``assign`` raises when a
module matches none or several, so a model whose layout changes fails loudly instead of being
silently misattributed.
"""
from __future__ import annotations

import re
from typing import NamedTuple

from torch import nn

COMPONENTS = ("input", "qkv_projection", "attention_core", "output_projection", "feed_forward",
              "norm_residual", "other")
LABELS = {"input": "input stage", "qkv_projection": "Q/K/V projections",
          "attention_core": "attention core", "output_projection": "attention output projection",
          "feed_forward": "feed-forward", "norm_residual": "norm + residual", "other": "head / other"}
#: the two definitions of "attention" used when asking where attention becomes the largest part
ATTENTION_CORE = ("attention_core",)
ATTENTION_ALL = ("qkv_projection", "attention_core", "output_projection")


class Rule(NamedTuple):
    component: str
    name: str | None = None     # regex, full match on the qualified module name ("" = root)
    cls: str | None = None      # regex, full match on the module's class name


_L = r"encoder\.layer\.\d+"                 # HF BERT-style layers
_T = r"encoder\.transformer\.layers\.\d+"   # torchaudio wav2vec2 layers

#: BERT, Longformer, BigBird, Nystromformer (Hugging Face BERT layout)
BERT_LIKE = (
    Rule("other", name=r"|encoder|encoder\.layer|pooler(\..*)?|activation"),
    Rule("input", name=r"embeddings(\..*)?"),
    Rule("norm_residual", name=_L),
    Rule("attention_core", name=_L + r"\.attention(\.self(\.dropout|\.conv)?)?"),
    Rule("qkv_projection", name=_L + r"\.attention\.self\.(query|key|value)(_global)?"),
    Rule("output_projection", name=_L + r"\.attention\.output\.dense"),
    Rule("norm_residual", name=_L + r"\.(attention\.output|output)(\.LayerNorm|\.dropout)?"),
    Rule("feed_forward", name=_L + r"\.(intermediate(\..*)?|output\.dense)"),
)

#: torchaudio HuBERT / wav2vec 2.0, and L-HuBERT (the same modules, attention swapped)
WAV2VEC2 = (
    Rule("other", name=r"|encoder|encoder\.transformer\.layers"),
    Rule("input", name=r"feature_extractor(\..*)?|encoder\.feature_projection(\..*)?"),
    # the transformer's own code adds the convolutional positions, then norm + dropout
    Rule("input", name=r"encoder\.transformer(\.pos_conv_embed(\..*)?|\.layer_norm|\.dropout)?"),
    Rule("norm_residual", name=_T + r"(\.dropout|\.layer_norm|\.final_layer_norm)?"),
    Rule("attention_core", name=_T + r"\.attention"),
    Rule("qkv_projection", name=_T + r"\.attention\.[qkv]_proj"),
    Rule("output_projection", name=_T + r"\.attention\.out_proj"),
    Rule("feed_forward", name=_T + r"\.feed_forward(\..*)?"),
)

#: ViT (transformers 5 layout: q/k/v/o projections directly in the attention module)
VIT = (
    Rule("other", name=r"|layers|pooler(\..*)?"),
    Rule("input", name=r"embeddings(\..*)?"),
    Rule("norm_residual", name=r"layers\.\d+(\.layernorm_before|\.layernorm_after|\.dropout)?|layernorm"),
    Rule("attention_core", name=r"layers\.\d+\.attention"),
    Rule("qkv_projection", name=r"layers\.\d+\.attention\.[qkv]_proj"),
    Rule("output_projection", name=r"layers\.\d+\.attention\.o_proj"),
    Rule("feed_forward", name=r"layers\.\d+\.mlp(\..*)?"),
)

_B = r"encoder\.layers\.\d+\.blocks\.\d+"    # Swin and PVTv2 blocks
#: Swin. Its block's own code is mostly window partition, cyclic shift and padding, i.e. how
#: windowed attention lays out its input: counted as attention core (its two residual adds too)
SWIN = (
    Rule("other", name=r"|encoder|encoder\.layers(\.\d+(\.blocks|\.downsample(\..*)?)?)?|pooler"),
    Rule("input", name=r"embeddings(\..*)?"),
    Rule("attention_core", name=_B + r"(\.attention(\.relative_position_bias)?)?"),
    Rule("qkv_projection", name=_B + r"\.attention\.[qkv]_proj"),
    Rule("output_projection", name=_B + r"\.attention\.o_proj"),
    Rule("norm_residual", name=_B + r"\.(layernorm_before|layernorm_after|dropout|drop_path)|layernorm"),
    Rule("feed_forward", name=_B + r"\.mlp(\..*)?"),
)

#: PVTv2: the first stage's overlapping patch embedding is the input stage; later stages'
#: patch embeddings are stage transitions; spatial reduction is the efficient attention's core
PVT_V2 = (
    Rule("other", name=r"|encoder|encoder\.layers(\.\d+(\.blocks)?)?|encoder\.layers\.[1-9]\d*\.patch_embedding(\..*)?"),
    Rule("input", name=r"encoder\.layers\.0\.patch_embedding(\..*)?"),
    Rule("norm_residual", name=_B + r"(\.layer_norm_1|\.layer_norm_2|\.drop_path)?|encoder\.layers\.\d+\.layer_norm"),
    Rule("attention_core", name=_B + r"\.attention(\.attn_drop|\.spatial_reduction|\.layer_norm)?"),
    Rule("qkv_projection", name=_B + r"\.attention\.(query|key|value)"),
    Rule("output_projection", name=_B + r"\.attention\.proj(_drop)?"),
    Rule("feed_forward", name=_B + r"\.mlp(\..*)?"),
)

#: effx's own encoder (effx.models.encoder): the attention core is a module of its own. The root's
#: own code is the embedding lookup's neighbour: the sinusoidal positions, counted as input
EFFX_ENCODER = (
    Rule("input", name=r"|embed|patch_embed"),     # PatchEncoder: the ViT patch embedding
    Rule("other", name=r"blocks"),
    Rule("norm_residual", name=r"blocks\.\d+(\.ln1|\.ln2)?|ln_f"),
    Rule("attention_core", name=r"blocks\.\d+\.attn(\.core)?"),
    Rule("qkv_projection", name=r"blocks\.\d+\.attn\.qkv"),
    Rule("output_projection", name=r"blocks\.\d+\.attn\.out"),
    Rule("feed_forward", name=r"blocks\.\d+\.ffn(\..*)?"),
)

FAMILIES = {"bert_like": BERT_LIKE, "wav2vec2": WAV2VEC2, "vit": VIT, "swin": SWIN,
            "pvt_v2": PVT_V2, "effx_encoder": EFFX_ENCODER}
#: root class (module path, class name) -> family
ROOTS = {
    ("transformers.models.bert.modeling_bert", "BertModel"): "bert_like",
    ("transformers.models.longformer.modeling_longformer", "LongformerModel"): "bert_like",
    ("transformers.models.big_bird.modeling_big_bird", "BigBirdModel"): "bert_like",
    ("transformers.models.nystromformer.modeling_nystromformer", "NystromformerModel"): "bert_like",
    ("torchaudio.models.wav2vec2.model", "Wav2Vec2Model"): "wav2vec2",
    ("transformers.models.vit.modeling_vit", "ViTModel"): "vit",
    ("transformers.models.swin.modeling_swin", "SwinModel"): "swin",
    ("transformers.models.pvt_v2.modeling_pvt_v2", "PvtV2Model"): "pvt_v2",
    ("effx.models.encoder", "Encoder"): "effx_encoder",
    ("effx.models.patch_encoder", "PatchEncoder"): "effx_encoder",
}


def family_of(model: nn.Module) -> str:
    key = (type(model).__module__, type(model).__name__)
    if key not in ROOTS:
        known = ", ".join(name for _, name in ROOTS)
        raise KeyError(f"no component table for {key[0]}.{key[1]}; known roots: {known}")
    return ROOTS[key]


def _matches(rule: Rule, name: str, cls: str) -> bool:
    return ((rule.name is None or re.fullmatch(rule.name, name) is not None)
            and (rule.cls is None or re.fullmatch(rule.cls, cls) is not None))


def assign(model: nn.Module, rules: tuple[Rule, ...] | None = None) -> dict[str, str]:
    """Qualified module name -> component, for every module of ``model`` (root = "").

    Raises ValueError naming the module when it matches no rule or several rules.
    """
    rules = FAMILIES[family_of(model)] if rules is None else rules
    out = {}
    for name, module in model.named_modules(remove_duplicate=False):
        cls = type(module).__name__
        hits = [r for r in rules if _matches(r, name, cls)]
        if len(hits) != 1:
            why = "no rule" if not hits else f"{len(hits)} rules ({', '.join(r.component for r in hits)})"
            raise ValueError(f"module {name!r} ({cls}) matches {why}")
        if hits[0].component not in COMPONENTS:
            raise ValueError(f"rule {hits[0]} names an unknown component")
        out[name] = hits[0].component
    return out
