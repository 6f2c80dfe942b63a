"""Transkimmer on GLUE (Guan et al., ACL 2022): accuracy, FLOPs and wall clock of learned token
skimming against fair references: the same encoder trained for the same budget without skimming,
the encoder cut to fewer layers, and a non-learned top-k pruning rule at matched FLOPs.

Every unit is one training job (``effx.transkimmer.jobs.Job``: train or resume from checkpoints,
evaluate on the dev set, count FLOPs) followed, in the same series, by its wall-clock unit (timed
against its reference, alternating, while nothing else runs: the unit reserves every CPU). The
analysis is ``effx.transkimmer.report``, ``claims``, ``recipes`` and ``figures``.
"""
from __future__ import annotations

import functools
import itertools
import json
import os

from effx import params as p
from effx.data.glue import TASKS, glue_dir, tsv_path
from effx.errors import ParameterError
from effx.study import Record, Study, Unit, require
from effx.transkimmer.jobs import DEFAULT_PREDICTOR_LR, Job, order_jobs

REFERENCES = ("baseline_continued", "fewer_layers", "topk_pruning")

PARAMETERS = {
    "tasks": p.choices(*TASKS, default=["SST-2"], doc="GLUE tasks (train and dev files needed)"),
    "encoder": p.text("'minilm' (packaged all-MiniLM-L6-v2), a local folder or a cached hub name",
                      default="minilm"),
    "seeds": p.positive_ints("training seeds", allow_zero=True, default=[0]),
    "lambdas": p.per_key(p.positive_numbers(), "skim-loss weights (ours: per real token; the "
                         "paper's = ours / fill ratio), or a dict task -> list", default=[0.3]),
    "repeat_lambdas": p.optional(p.per_key(p.positive_numbers()),
                                 "the lambdas also trained at seeds other than 0 (a list, or a "
                                 "dict task -> list; tasks not named repeat all theirs): the whole "
                                 "grid at seed 0 (when listed in seeds), these at every seed; None: "
                                 "every lambda at every seed"),
    "predictor_lrs": p.positive_numbers("learning rates of the skim predictors",
                                   default=[DEFAULT_PREDICTOR_LR]),
    "epochs": p.per_key(p.positive_number(), "stage 1 (fine-tuning) epochs, or a dict task -> epochs",
                        default=1.0),
    "skim_epochs": p.per_key(p.positive_number(), "stage 2 (Transkimmer / equal budget) epochs",
                             default=1.0),
    "lr": p.positive_number("stage 1 learning rate", default=5e-5),
    "skim_lr": p.positive_number("stage 2 learning rate (encoder and head)", default=2e-5),
    "variant": p.choice("fixed", "paper", default="fixed",
                        doc="'fixed' (masked softmax, pads excluded) or 'paper' (first release)"),
    "distills": p.positive_numbers("weights of distillation from the baseline's logits (0: none); "
                                   "every Transkimmer setting is trained with each",
                                   maximum=1, allow_zero=True, default=[0.0]),
    "frozen_epochs": p.positive_numbers("epochs at the end of stage 2 trained with the skim "
                                        "decisions frozen (0: none; part of skim_epochs); every "
                                        "Transkimmer setting is trained with each",
                                        allow_zero=True, default=[0.0]),
    "references": p.choices(*REFERENCES, allow_empty=True, default=["baseline_continued"],
                            doc="references trained or applied beside Transkimmer"),
    "fewer_layers": p.positive_ints("layers kept by the fewer-layer references", default=[3, 2]),
    "layer_choice": p.choice("spread", "first", default="spread",
                             doc="the fewer-layer references keep layers spread over the depth "
                                 "(ending with the last) or the first ones"),
    "topk_targets": p.positive_numbers("FLOPs fractions of the top-k pruning references",
                                       default=[0.5]),
    "freeze_word_embeddings": p.flag("keep the word embeddings frozen in training (a CPU economy: "
                                     "about half of MiniLM's weights); False trains them, as the "
                                     "paper does", default=True),
    "max_length": p.positive_int("tokens kept per example", maximum=512, default=128),
    "batch_size": p.positive_int("training batch size", default=32),
    "subset": p.positive_int("training examples (0: the whole training set)", allow_zero=True,
                             default=256),
    "dev_subset": p.positive_int("dev examples evaluated (0: the whole dev set)", allow_zero=True,
                                 default=200),
    "wall_clock": p.flag("time every job against its reference (alone on the machine)", default=True),
    "removal_paths": p.flag("also time each Transkimmer job's removal path writing every "
                            "token's state back against the logits alone (alone on the machine)",
                            default=False),
    "timing_examples": p.positive_int("dev examples timed per job", default=32),
    "timing_repeats": p.positive_int("alternating timing rounds", default=3),
    "device": p.device(),
    "threads": p.positive_int("torch threads per training job (resume is exact per count)", default=1),
}


def check(P: dict) -> dict:
    try:
        glue_dir()
    except ParameterError as exc:
        raise ParameterError("tasks", P["tasks"], exc.allowed, why=str(exc)) from None
    for task in P["tasks"]:
        for split in ("train", "dev"):
            tsv_path(task, split)                        # names the file it could not find
    for name in ("lambdas", "repeat_lambdas", "epochs", "skim_epochs"):
        if isinstance(P[name], dict):                  # tasks not selected are ignored
            require(set(P[name]) <= set(TASKS), name, P[name],
                    f"a dict with keys among the GLUE tasks {', '.join(TASKS)}")
    for task in P["tasks"]:
        grid = _per_task(P["lambdas"], task, [])
        extra = sorted(set(_repeated(P, task)) - set(grid))
        require(not extra, "repeat_lambdas", P["repeat_lambdas"],
                f"lambdas among {task}'s lambdas {grid} (not in them: {extra})")
        stage2 = _per_task(P["skim_epochs"], task, 1.0)
        require(max(P["frozen_epochs"]) < stage2, "frozen_epochs", P["frozen_epochs"],
                f"epochs shorter than {task}'s skim_epochs ({stage2:g})")
    return P


def _per_task(value, task, default=None):
    return value.get(task, default) if isinstance(value, dict) else value


def _repeated(P: dict, task: str) -> list[float]:
    """The lambdas of ``task`` trained at every seed (the others at seed 0 only)."""
    every = _per_task(P["lambdas"], task, [])
    if P["repeat_lambdas"] is None:
        return every
    return _per_task(P["repeat_lambdas"], task, every)


def jobs(P: dict) -> list[Job]:
    """Every job of the parameters, each after the jobs it starts from."""
    out = []
    for task in P["tasks"]:
        for seed in P["seeds"]:
            common = dict(task=task, encoder=P["encoder"], seed=seed, subset=P["subset"],
                          max_length=P["max_length"], batch_size=P["batch_size"], lr=P["lr"],
                          epochs=_per_task(P["epochs"], task, 1.0), device=P["device"],
                          freeze_word_embeddings=P["freeze_word_embeddings"],
                          dev_subset=P["dev_subset"], timing_examples=P["timing_examples"],
                          timing_repeats=P["timing_repeats"])
            stage2 = dict(skim_epochs=_per_task(P["skim_epochs"], task, 1.0), skim_lr=P["skim_lr"])
            base = Job(method="baseline", **common)
            out.append(base)
            lambdas = _per_task(P["lambdas"], task, []) if seed == 0 else \
                _repeated(P, task)
            for lam, plr, kd, frozen in itertools.product(lambdas, P["predictor_lrs"],
                                                          P["distills"], P["frozen_epochs"]):
                out.append(base.with_method("transkimmer", skim_lambda=lam, predictor_lr=plr,
                                            variant=P["variant"], distill=float(kd),
                                            frozen_epochs=float(frozen), **stage2))   # 0 == 0.0
            if "baseline_continued" in P["references"]:   # even with no lambda in this run: a
                # long chain (SST-2) can train its Transkimmer settings in runs of their own
                out.append(base.with_method("baseline_continued", **stage2))
            if "fewer_layers" in P["references"]:
                out += [base.with_method("fewer_layers", layers=k, layer_choice=P["layer_choice"])
                        for k in P["fewer_layers"]]
            if "topk_pruning" in P["references"]:
                out += [base.with_method("topk_pruning", flops_target=f) for f in P["topk_targets"]]
    return order_jobs(out)


@functools.lru_cache(maxsize=None)
def _train_examples(task: str) -> int:
    try:
        with open(tsv_path(task, "train"), encoding="utf-8") as f:
            return max(sum(1 for _ in f) - 1, 1)
    except (OSError, ParameterError):
        return 1000


def _cost(job: Job) -> float:
    """A job's relative cost (the progress ETA and the plan): thousands of training examples
    times the epochs the job trains itself (Transkimmer and the continued baseline start from a
    trained baseline), a cut encoder by its share of the layers; top-k pruning only evaluates
    (counted as a tenth of an epoch)."""
    from effx.transkimmer.encoders import encoder_depth
    thousands = (job.subset or _train_examples(job.task)) / 1000
    if job.method == "topk_pruning":
        return thousands * 0.1
    if job.method in ("transkimmer", "baseline_continued"):      # + distillation's teacher pass
        return thousands * (job.skim_epochs + (0.2 if job.distill else 0.0))
    depth = encoder_depth(job.encoder) if job.method == "fewer_layers" else None
    return thousands * job.epochs * (job.layers / depth if depth else 1.0)


def units(P: dict) -> list[Unit]:
    """One unit per job (its own series, after the jobs it starts from), then its wall clock;
    the removal paths' timings (when asked) after every job."""
    out, last = [], []
    for job in jobs(P):
        series = json.dumps(job.key(), sort_keys=True)
        cost = _cost(job)
        after = tuple(Unit(req.key(), "").id for req in job.requires())
        out.append(Unit(job.key(), job.label, series=series, cost_s=cost, cpus=P["threads"],
                        gpus=int(P["device"] != "cpu"), after=after))
        if P["wall_clock"]:
            out.append(Unit({**job.key(), "measure": "wall_clock"}, f"{job.label}: wall clock",
                            series=series, cost_s=job.timing_examples * job.timing_repeats / 64,
                            cpus=os.cpu_count() or 1,
                            gpus=int(P["device"] != "cpu")))
        if P["removal_paths"] and job.method == "transkimmer":
            last.append(Unit({**job.key(), "measure": "removal_paths"},
                             f"{job.label}: removal paths", series=series,
                             cost_s=job.timing_examples * job.timing_repeats / 80,
                             cpus=os.cpu_count() or 1, gpus=int(P["device"] != "cpu")))
    return out + last


def execute(unit: Unit, P: dict, ctx) -> list[Record]:
    from pathlib import Path

    from effx.transkimmer.execute import (loss_curve_gap, run_job, time_job, time_removal_paths,
                                          trained_model)
    job = Job.from_key(unit.key)
    folder = Path(ctx.checkpoint_dir)
    measure = unit.key.get("measure")
    if measure in ("wall_clock", "removal_paths"):
        import torch
        torch.set_num_threads(P["threads"])
        # the weights may have been retrained since the job's record: the gap says how closely
        # they match it
        model, tokenizer, trained = trained_model(job, folder, log=ctx.log)
        timer = time_job if measure == "wall_clock" else time_removal_paths
        metrics, info = timer(job, model, tokenizer, log=ctx.log)
        info["loss_curve_gap"] = loss_curve_gap(trained, ctx.earlier)
        return [Record(unit.key, "ok", metrics, info)]
    metrics, info = run_job(job, folder, log=ctx.log, timing=False)
    return [Record(unit.key, "ok", metrics, info)]


STUDY = Study(name="transkimmer_glue", title="Transkimmer on GLUE", part="Studies", position=40,
              parameters=PARAMETERS, units=units, execute=execute, check=check, gpu_priority=5,
              share_s=240)
