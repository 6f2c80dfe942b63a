"""Tipping points (Diwan, Choi and Harwath, ACL 2023): the input length from which an efficient
attention variant is cheaper than its vanilla model, per metric, mode, modality and device.

Modalities and models: ``effx.models.builders`` (zoo models built from configs with random
weights, and two controlled comparisons where only attention changes). A unit of work is one
(modality, mode, length, run): every model of the modality is measured there, and their calls
alternate (``effx.profiling.paired``) so that the cost ratio of a pair is paired per repeat.
``runs`` repeats the whole sweep in fresh worker processes. Analysis: ``.analysis``.
"""
from __future__ import annotations


from effx import params as p
from effx.errors import Unsupported
from effx.models import builders
from effx.study import Record, Study, Unit, require

MODALITIES = tuple(builders.MODALITIES)
METRICS = ("latency", "throughput", "memory", "flops")
MODES = ("inference", "training")

_labels = sorted({m for mod in MODALITIES for m in builders.labels(mod)})
DEFAULT_MODELS = {"text": ["bert", "longformer", "bigbird", "nystromformer"],
                  "speech": ["hubert", "lhubert"], "vision": ["vit", "swin", "pvt_v2"],
                  "controlled": ["dense_sdpa", "dense_eager", "sliding_window", "block_sparse", "nystrom"],
                  "controlled_vision": ["vit_dense", "vit_window"]}
DEFAULT_LENGTHS = {"text": [128, 512, 1024], "speech": [2.0, 8.0], "vision": [224, 448],
                   "controlled": [512, 1024, 2048], "controlled_vision": [224, 448]}

PARAMETERS = {
    "modalities": p.choices(*MODALITIES, default=list(MODALITIES), doc="modalities to profile"),
    "models": p.mapping_of(p.choices(*_labels), MODALITIES, default=DEFAULT_MODELS,
                           doc="models per modality; 'name:eager' = eager dense attention"),
    "lengths": p.mapping_of(p.positive_numbers(), MODALITIES, default=DEFAULT_LENGTHS,
                            doc="lengths per modality: tokens, seconds (speech), image side (px)"),
    "batch": p.positive_int("batch size of the latency, memory and FLOPs points", default=1),
    "throughput_batches": p.positive_ints("larger batches tried for throughput (samples/s at the "
                                          "largest one that fits throughput_memory_gb and the "
                                          "time budget)", default=[4]),
    "throughput_memory_gb": p.positive_number("memory a throughput batch may take (activations, "
                                              "estimated from the batch-1 peak)", default=4.0),
    "modes": p.choices(*MODES, default=["inference"]),
    "metrics": p.choices(*METRICS, default=list(METRICS)),
    "size": p.choice("base", "tiny", default="base", doc="paper-scale models, or tiny smoke ones"),
    "controlled_layers": p.positive_int("depth of effx's controlled encoders (BERT-base widths)",
                                        default=2),
    "lhubert_window": p.positive_int("L-HuBERT window: frames (20 ms) on each side", default=64),
    "device": p.device(),
    "dtype": p.dtype(),
    "repeats": p.positive_int("alternating timed rounds per point (>= 5: the intervals' "
                              "simulated coverage falls below 90% with 3)", default=5),
    "warmup": p.positive_int("untimed warm-up calls per model and point", default=1),
    "runs": p.positive_int("whole sweeps, each in a fresh worker process", default=1),
    "threads": p.positive_int("CPU threads for torch while timing", default=2),
    "budget_s": p.positive_number("a model whose warm-up call takes longer than this (s) is not "
                                  "timed at this length or longer ones (memory, FLOPs still are)",
                                  default=1.2),
    "n_boot": p.positive_int("bootstrap resamples of the tipping-point intervals", default=1000),
}


def check(P: dict) -> dict:
    for mod in P["modalities"]:
        for name in ("models", "lengths"):
            require(mod in P[name], name, P[name],
                    f"a dict with an entry for every modality in {P['modalities']}",
                    why=f"no entry for {mod!r}")
        allowed = builders.labels(mod)
        bad = [m for m in P["models"][mod] if m not in allowed]
        require(not bad, f"models[{mod!r}]", bad[:1], ", ".join(allowed),
                why=f"not a {mod} model")
        if builders.MODALITIES[mod].unit != "s":
            require(all(float(x) == int(x) for x in P["lengths"][mod]), f"lengths[{mod!r}]",
                    P["lengths"][mod], "whole numbers (tokens or pixels)")
            P["lengths"][mod] = [int(x) for x in P["lengths"][mod]]
    return P


def units(P: dict) -> list[Unit]:
    out = []
    for run in range(P["runs"]):
        for mod in P["modalities"]:
            for mode in P["modes"]:
                series = f"{mod}/{mode}/run{run}"
                for length in P["lengths"][mod]:
                    key = dict(modality=mod, mode=mode, length=length, run=run, batch=P["batch"],
                               device=P["device"], dtype=P["dtype"], size=P["size"],
                               models=sorted(P["models"][mod]))
                    unit = builders.MODALITIES[mod].unit
                    cost = float(length) * len(P["models"][mod]) * (3 if mode == "training" else 1)
                    out.append(Unit(key, f"{mod} {mode} at {length:g} {unit} (run {run})",
                                    series=series, cost_s=cost, gpus=int(P["device"] != "cpu"),
                                    cpus=P["threads"], worker=f"run{run}"))
    return out


def point_of(unit: Unit, model: str, P: dict) -> dict:
    k = unit.key
    return dict(modality=k["modality"], model=model, mode=k["mode"], device=k["device"],
                dtype=k["dtype"], batch=k["batch"], size=k["size"], length=k["length"], run=k["run"],
                option=builders.option_label(k["modality"], model, P["controlled_layers"],
                                             P["lhubert_window"]))


_current_modality: list[str] = []


def _model(modality: str, label: str, P: dict):
    if _current_modality[-1:] != [modality]:     # one modality's models in memory at a time
        builders.release()
        _current_modality[:] = [modality]
    return builders.build(modality, label, P["size"], P["device"], P["dtype"],
                          P["controlled_layers"], P["lhubert_window"])


def execute(unit: Unit, P: dict, ctx) -> list[Record]:
    from effx.studies.tipping_points.measure import measure_unit
    return measure_unit(unit, P, ctx, _model)


STUDY = Study(name="tipping_points", title="Tipping points", part="Studies", position=20,
              parameters=PARAMETERS, units=units, execute=execute, check=check, gpu_priority=2,
              share_s=300)
