"""SPION (Yoon, Han, Moon, arXiv 2309.12578; PAKDD 2024): layer-wise block-sparse training,
the patterns found by a convolution filter and flood fill over dense warm-up attention maps.

A unit is one training run (``effx.spion.train``): a task, a method and a seed. Per (task, seed)
the units form a series that starts with SPION-CF, whose learned layouts fix the density the
fixed patterns (sliding window, BigBird-like) are given: equal attention cost. Each SPION run also
times its learned layouts' attention alone against dense attention (paired rounds). Analysis:
``.analysis``; figures: ``.plots``.
"""
from __future__ import annotations

from effx import params as p
from effx.data.lra import TASKS
from effx.spion.train import METHODS, SWITCH_RULES
from effx.study import Study, Unit, require

ORDER = ("spion_cf", "spion_f", "spion_c", "dense", "sliding_window", "bigbird")

PARAMETERS = {
    "tasks": p.choices(*TASKS, default=["listops", "image"], doc="LRA-style tasks"),
    "lengths": p.mapping_of(p.positive_int(), tuple(TASKS), default={"listops": 256, "image": 256,
                                                                     "text": 512},
                            doc="sequence length per task (tokens; image: a square side^2)"),
    "methods": p.choices(*ORDER, default=["spion_cf", "dense", "sliding_window"]),
    "block": p.positive_int("block size B of the layouts", default=32),
    "filter_size": p.positive_int("F of the F x F diagonal convolution filter", default=31),
    "quantile": p.positive_number("flood-fill threshold: quantile q of the block scores",
                                  default=0.96, maximum=1.0),
    "c_density": p.positive_number("SPION-C: fraction of blocks kept after the convolution",
                                   default=0.1, maximum=1.0),
    "softmax": p.choice("faithful", "standard", default="faithful",
                        doc="'faithful' (unselected logits count as 0, as the official kernel) "
                            "or 'standard' (masked softmax)"),
    "switch_rule": p.choice(*SWITCH_RULES, default="fixed",
                            doc="'distance' (the paper's 15% rule) or 'fixed' (at switch_fraction)"),
    "switch_fraction": p.positive_number("fixed rule: switch at this fraction of the steps",
                                         default=0.4, maximum=1.0),
    "capture_every": p.positive_int("K: steps between attention-map captures", default=10),
    "threshold": p.positive_number("the distance rule's relative change", default=0.15),
    "steps": p.positive_int("training steps per run", default=120),
    "batch_size": p.positive_int("training batch size", default=32),
    "lr": p.positive_number("peak learning rate (AdamW)", default=1e-3),
    "warmup": p.positive_int("warm-up steps (restarted at the switch)", default=10, allow_zero=True),
    "n_train": p.positive_int("training examples per task", default=2000),
    "n_test": p.positive_int("test examples per task", default=500),
    "seeds": p.positive_ints("training seeds", default=[1]),
    "backend": p.choice("auto", "torch", "triton", "csr", default="auto",
                        doc="block-sparse path ('auto': Triton on CUDA, PyTorch on CPU)"),
    "timing_repeats": p.positive_int("paired rounds of the attention-alone timing", default=10),
    "device": p.device(),
    "threads": p.positive_int("CPU threads for torch", default=2),
}


def check(P: dict) -> dict:
    for task in P["tasks"]:
        require(task in P["lengths"], "lengths", P["lengths"], f"an entry for every task in {P['tasks']}")
    require(P["quantile"] < 1.0, "quantile", P["quantile"], "a number in (0, 1)")
    return P


def units(P: dict) -> list[Unit]:
    out = []
    for task in P["tasks"]:
        for seed in P["seeds"]:
            for method in [m for m in ORDER if m in P["methods"]]:
                key = run_key(P, task, method, seed)
                cost = P["steps"] * (P["lengths"][task] / 256) ** 1.5 * 0.3
                out.append(Unit(key, f"{task} {method} (seed {seed})", series=f"{task}/seed{seed}",
                                cost_s=cost, gpus=int(P["device"] != "cpu"), cpus=P["threads"]))
    return out


def run_key(P: dict, task: str, method: str, seed: int) -> dict:
    """The settings of one run that the study controls (the full config is in the record)."""
    key = dict(task=task, method=method, seed=seed, length=P["lengths"][task], steps=P["steps"],
               batch_size=P["batch_size"], lr=P["lr"], warmup=P["warmup"], n_train=P["n_train"],
               n_test=P["n_test"], block=P["block"], device=P["device"])
    if method.startswith("spion"):
        key.update(filter_size=P["filter_size"], quantile=P["quantile"], softmax=P["softmax"],
                   switch_rule=P["switch_rule"], capture_every=P["capture_every"],
                   switch=(P["threshold"] if P["switch_rule"] == "distance" else P["switch_fraction"]))
        if method == "spion_c":
            key["c_density"] = P["c_density"]
    if method in ("sliding_window", "bigbird"):
        key.update(softmax=P["softmax"], density="matched to spion_cf")
    return key


def execute(unit: Unit, P: dict, ctx):
    from effx.studies.spion.measure import run_unit
    return run_unit(unit, P, ctx)


STUDY = Study(name="spion", title="SPION: layer-wise sparse training", part="Studies",
              position=50, parameters=PARAMETERS, units=units, execute=execute, check=check,
              gpu_priority=4, share_s=240)
