"""Where the time goes: cost per Transformer component versus input length (Diwan et al., ACL 2023).

"When to Use Efficient Self Attention?" finds that the non-attention parts of a Transformer
(embeddings, feed-forward, and for speech the convolutional waveform encoder) carry a large share
of its cost at the lengths real data have. For the models of the tipping-point study
(``effx.models.builders``) and each length, this study measures latency per component from
PyTorch's profiler (operator time attributed to each module's component), the rest as an
overhead band, an ablation of the attention core as an independent check of attention's share,
and FLOPs and saved activations per component (``effx.profiling.components``). A unit is one
(model, mode, length). Analysis: ``.analysis``; figures: ``.plots``.
"""
from __future__ import annotations

from effx import params as p
from effx.models import builders
from effx.study import Study, Unit, require
from effx.studies.tipping_points import PARAMETERS as TP, check as tp_check

MODALITIES = tuple(builders.MODALITIES)
DEFAULT_MODELS = {"text": ["bert"], "speech": ["hubert", "lhubert"], "vision": ["vit"],
                  "controlled": ["dense_sdpa", "sliding_window"],
                  "controlled_vision": ["vit_dense", "vit_window"]}
DEFAULT_LENGTHS = {"text": [128, 512], "speech": [2.0], "vision": [224],
                   "controlled": [512, 2048], "controlled_vision": [224]}

PARAMETERS = {
    # the tipping-point study's checks: both accept exactly the same models and lengths
    "modalities": TP["modalities"].with_default(list(MODALITIES)),
    "models": TP["models"].with_default(DEFAULT_MODELS),
    "lengths": TP["lengths"].with_default(DEFAULT_LENGTHS,
                                          "inference lengths per modality: tokens, seconds, px"),
    "training_lengths": p.mapping_of(p.positive_numbers(), MODALITIES, allow_empty=True,
                                     default={"controlled": [512]},
                                     doc="lengths also measured as a training step (forward + "
                                         "backward), per modality; {} = inference only"),
    "batch": p.positive_int("batch size", default=1),
    "size": TP["size"],
    "controlled_layers": TP["controlled_layers"],
    "lhubert_window": TP["lhubert_window"],
    "device": TP["device"],
    "dtype": TP["dtype"],
    "repeats": p.positive_int("rounds per point, each a plain and an ablated step, timed and "
                              "profiled", default=6),
    "threads": TP["threads"],
    "budget_s": p.positive_number("a point whose plain step takes longer than this (s) is not "
                                  "timed (FLOPs and memory per component still are)", default=8.0),
}


def check(P: dict) -> dict:
    P = tp_check(P)
    for mod, lengths in P["training_lengths"].items():
        require(mod in P["modalities"], "training_lengths", P["training_lengths"],
                f"keys among the modalities {P['modalities']}", why=f"{mod!r} is not profiled")
        if builders.MODALITIES[mod].unit != "s":
            require(all(float(x) == int(x) for x in lengths), f"training_lengths[{mod!r}]",
                    lengths, "whole numbers")
            P["training_lengths"][mod] = [int(x) for x in lengths]
    return P


def units(P: dict) -> list[Unit]:
    out = []
    for mod in P["modalities"]:
        for model in P["models"][mod]:
            for mode, lengths in (("inference", P["lengths"][mod]),
                                  ("training", P["training_lengths"].get(mod, []))):
                for length in lengths:
                    key = dict(modality=mod, model=model, mode=mode, device=P["device"],
                               dtype=P["dtype"], batch=P["batch"], size=P["size"], length=length,
                               option=builders.option_label(mod, model, P["controlled_layers"],
                                                            P["lhubert_window"]))
                    unit = builders.MODALITIES[mod].unit
                    out.append(Unit(key, f"{model} {mode} at {length:g} {unit}",
                                    series=f"{mod}/{model}/{mode}",
                                    cost_s=float(length) * (3 if mode == "training" else 1),
                                    gpus=int(P["device"] != "cpu"), cpus=P["threads"]))
    return out


def execute(unit: Unit, P: dict, ctx):
    from effx.studies.cost_breakdown.measure import measure_point
    return measure_point(unit, P, ctx)


STUDY = Study(name="cost_breakdown", title="Where the time goes", part="Studies", position=30,
              parameters=PARAMETERS, units=units, execute=execute, check=check, gpu_priority=3,
              share_s=240)
