"""The units of work of the Transkimmer study: one ``Job`` = train (or load) one model, evaluate it.

Methods (``METHODS``):

* ``baseline``: the encoder fine-tuned from pre-trained for ``epochs`` (stage 1);
* ``baseline_continued``: that baseline trained on for ``skim_epochs`` at ``skim_lr`` (stage 2)
  without skimming: Transkimmer's equal training budget, against which its accuracy is judged;
* ``transkimmer``: stage 2 with skim predictors and the skim loss, from the baseline
  (``init='finetuned'``) or, as the paper does, from the pre-trained encoder (``'pretrained'``),
  with optional distillation from the baseline's logits and an optional last phase with frozen
  decisions;
* ``fewer_layers``: the encoder cut to ``layers`` layers (its first ones, or spread over its depth:
  ``layer_choice``), fine-tuned as the baseline;
* ``topk_pruning``: no training; the baseline with top-k attention pruning at inference, its keep
  ratio set to spend ``flops_target`` of the baseline's FLOPs (``topk.py``).

A job holds every setting that can change its result. ``key()`` (the result's identity) and
``checkpoint_name()`` (the trained weights' identity, from ``train_key()``) hold exactly the
settings that matter to its method, so two jobs that train the same model share its checkpoint;
settings irrelevant to a method must keep their defaults (ParameterError otherwise), and
``with_method`` resets them. ``requires()`` names the jobs whose checkpoints a job starts from.
``PROTOCOL`` is part of every key: it changes whenever training or measuring changes meaning.
"""
from __future__ import annotations

import hashlib
import json
import math
import numbers
from dataclasses import dataclass, fields

from effx.errors import ParameterError

#: 1: the first study (stage 2 replayed stage 1's batches); 2: this protocol
PROTOCOL = 2
#: what a removal path's wall clock timed (``info['timed_forward']`` of a wall-clock record): the
#: logits alone since 2026-12-04; records without the field wrote every token's state back
LOGITS_TIMED, STATES_TIMED = "logits only", "states written back"
METHODS = ("baseline", "baseline_continued", "transkimmer", "fewer_layers", "topk_pruning")
INITS = ("finetuned", "pretrained")
VARIANTS = ("fixed", "paper")         # as model.VARIANTS (tested), without importing torch here
LAYER_CHOICES = ("first", "spread")   # as encoders.LAYER_CHOICES (tested), likewise
_COMMON = ("task", "encoder", "seed", "subset", "max_length", "batch_size", "bucketed", "lr",
           "weight_decay", "warmup", "epochs", "freeze_word_embeddings", "device")
_STAGE2 = ("skim_epochs", "skim_lr")
_SKIM = ("init", "predictor_lr", "skim_lambda", "variant", "tau", "keep_bias", "distill",
         "distill_temperature", "frozen_epochs")
#: the predictors' learning rate unless a job names another (labels show only the others)
DEFAULT_PREDICTOR_LR = 1e-4
#: settings of the evaluation (they change results, never weights)
EVAL_FIELDS = ("dev_subset", "timing_examples", "timing_repeats", "counted_flops_examples")
#: settings that change each method's trained weights (top-k: its baseline's, then its rule)
TRAIN_FIELDS = {
    "baseline": _COMMON,
    "baseline_continued": _COMMON + _STAGE2,
    "transkimmer": _COMMON + _STAGE2 + _SKIM,
    "fewer_layers": _COMMON + ("layers", "layer_choice"),
    "topk_pruning": _COMMON + ("flops_target", "prune_layers"),
}


@dataclass(frozen=True)
class Job:
    task: str
    method: str
    encoder: str = "minilm"           # 'minilm', a checkpoint folder, or a cached hub name
    seed: int = 0
    subset: int = 0                   # training examples, a fixed random sample (0: all)
    max_length: int = 128             # truncation
    batch_size: int = 32
    bucketed: bool = True             # training batches of similar lengths
    lr: float = 5e-5                  # stage 1 (fine-tuning from pre-trained)
    weight_decay: float = 0.01
    warmup: float = 0.06              # fraction of each stage's steps
    epochs: float = 3.0               # stage 1
    freeze_word_embeddings: bool = True   # CPU economy: 11.7M of MiniLM's 22.7M weights
    device: str = "cpu"
    skim_epochs: float = 2.0          # stage 2 (Transkimmer, or the continued baseline)
    skim_lr: float = 2e-5             # stage 2, encoder and head
    init: str = "finetuned"           # Transkimmer starts from the baseline, or from pre-trained
    predictor_lr: float = DEFAULT_PREDICTOR_LR
    skim_lambda: float = 0.5          # our lambda: see loss.py for the official code's
    variant: str = "fixed"            # 'fixed' (masked softmax, pads excluded) or 'paper'
    tau: float = 1.0                  # Gumbel-softmax temperature
    keep_bias: float = 5.0            # predictor output bias at init (+keep / -skim)
    distill: float = 0.0              # weight of distillation from the baseline's logits
    distill_temperature: float = 1.0
    frozen_epochs: float = 0.0        # last part of skim_epochs with decisions frozen
    layers: int = 3                   # fewer_layers: layers kept
    layer_choice: str = "first"       # fewer_layers: the first ones (records before the choice
                                      # existed) or 'spread' over the depth (encoders.kept_layers)
    flops_target: float = 0.5         # topk_pruning: FLOPs fraction of the baseline's
    prune_layers: tuple = ()          # topk_pruning: layers pruned before (): all but the first
    dev_subset: int = 0               # dev examples evaluated (0: all)
    timing_examples: int = 256
    timing_repeats: int = 3
    counted_flops_examples: int = 8

    def __post_init__(self):
        from effx.data.glue import task_spec
        if self.method not in METHODS:
            raise ParameterError("method", self.method, ", ".join(METHODS))
        object.__setattr__(self, "task", task_spec(self.task).name)
        object.__setattr__(self, "prune_layers", tuple(int(x) for x in self.prune_layers))
        checks = {
            "seed": self.seed >= 0, "subset": self.subset >= 0, "dev_subset": self.dev_subset >= 0,
            "max_length": 8 <= self.max_length <= 512, "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0, "skim_lr": self.skim_lr > 0, "predictor_lr": self.predictor_lr >= 0,
            "weight_decay": self.weight_decay >= 0, "warmup": 0 <= self.warmup < 1,
            "epochs": self.epochs > 0, "skim_epochs": self.skim_epochs > 0,
            "skim_lambda": self.skim_lambda >= 0, "tau": self.tau > 0,
            "distill": 0 <= self.distill <= 1, "distill_temperature": self.distill_temperature > 0,
            "frozen_epochs": 0 <= self.frozen_epochs < self.skim_epochs,
            "layers": self.layers >= 1, "flops_target": 0 < self.flops_target <= 1,
            "timing_examples": self.timing_examples >= 1, "timing_repeats": self.timing_repeats >= 1,
            "counted_flops_examples": self.counted_flops_examples >= 1,
            "variant": self.variant in VARIANTS, "init": self.init in INITS,
            "layer_choice": self.layer_choice in LAYER_CHOICES,
        }
        for name, ok in checks.items():
            if not ok:
                raise ParameterError(name, getattr(self, name),
                                     _ALLOWED.get(name, "see effx.transkimmer.jobs.Job"))
        relevant = set(TRAIN_FIELDS[self.method]) | set(EVAL_FIELDS) | {"method"}
        for f in fields(self):
            if f.name not in relevant and getattr(self, f.name) != f.default:
                raise ParameterError(f.name, getattr(self, f.name), f"its default ({f.default!r})",
                                     why=f"method {self.method!r} does not use it")

    # -- identity ------------------------------------------------------------------------------
    def train_key(self) -> dict:
        """The settings that make its trained weights (top-k: its baseline's, then its rule)."""
        return {"protocol": PROTOCOL, "method": self.method,
                **{f: _plain(getattr(self, f)) for f in TRAIN_FIELDS[self.method]}}

    def key(self) -> dict:
        """The result's identity: train_key() and the evaluation settings (JSON-able)."""
        return {**self.train_key(), **{f: _plain(getattr(self, f)) for f in EVAL_FIELDS}}

    def checkpoint_name(self) -> str:
        """Folder name of its trained weights: task, method and a hash of train_key()."""
        digest = hashlib.sha1(json.dumps(self.train_key(), sort_keys=True).encode()).hexdigest()
        return f"{self.task}-{self.method}-{digest[:16]}"

    @property
    def label(self) -> str:
        """Human text for progress lines."""
        what = {"baseline": f"{self.epochs:g} ep",
                "baseline_continued": f"{self.epochs:g}+{self.skim_epochs:g} ep",
                "transkimmer": f"{self.variant} lambda={self.skim_lambda:g} "
                               f"{self.init} +{self.skim_epochs:g} ep"
                               + (f" predictor_lr={self.predictor_lr:g}"
                                  if self.predictor_lr != DEFAULT_PREDICTOR_LR else "")
                               + (f" distill={self.distill:g}" if self.distill else "")
                               + (f" frozen={self.frozen_epochs:g} ep" if self.frozen_epochs else ""),
                "fewer_layers": f"{self.layer_choice} {self.layers} layers, {self.epochs:g} ep",
                "topk_pruning": f"FLOPs target {self.flops_target:g}"}[self.method]
        sub = f", {self.subset} ex" if self.subset else ""
        return f"{self.task} {self.method} ({what}{sub}, {self.encoder}, seed {self.seed})"

    # -- relations -----------------------------------------------------------------------------
    def with_method(self, method: str, **changes) -> "Job":
        """The same settings under another method; settings it does not use reset to defaults."""
        keep = set(TRAIN_FIELDS[method]) | set(EVAL_FIELDS)
        values = {f.name: getattr(self, f.name) if f.name in keep else f.default
                  for f in fields(self) if f.name != "method"}
        return Job(method=method, **{**values, **changes})

    def requires(self) -> tuple["Job", ...]:
        """Jobs whose trained checkpoints this one starts from (or distils from)."""
        needs_baseline = (self.method in ("baseline_continued", "topk_pruning") or
                          (self.method == "transkimmer" and (self.init == "finetuned" or self.distill)))
        return (self.with_method("baseline"),) if needs_baseline else ()

    @property
    def trains(self) -> bool:
        return self.method != "topk_pruning"

    @classmethod
    def from_key(cls, key: dict) -> "Job":
        """The job a key (or a results row holding one) describes; other entries are ignored."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in key.items() if k in names and not _missing(v)}
        if "prune_layers" in values:
            values["prune_layers"] = tuple(values["prune_layers"])
        for f in fields(cls):      # numbers read back from tables may be floats / numpy scalars
            if f.name in values and f.type == "int":
                values[f.name] = int(values[f.name])
            elif f.name in values and f.type == "bool":
                values[f.name] = bool(values[f.name])
        return cls(**values)


_ALLOWED = {"max_length": "8..512", "warmup": "0 <= warmup < 1", "distill": "0..1",
            "frozen_epochs": "0 <= frozen_epochs < skim_epochs", "flops_target": "0 < target <= 1",
            "variant": "'fixed' or 'paper'", "init": "'finetuned' or 'pretrained'",
            "layer_choice": "'first' or 'spread'"}


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def _missing(value) -> bool:
    return value is None or (isinstance(value, numbers.Real) and not isinstance(value, bool)
                             and math.isnan(value))


def order_jobs(jobs) -> list[Job]:
    """`jobs` with the jobs they require placed first (each once): an order in which every
    checkpoint exists before a job needs it. Required jobs not listed are added."""
    out, seen = [], set()

    def visit(job: Job):
        for req in job.requires():
            visit(req)
        if job not in seen:
            seen.add(job)
            out.append(job)
    for job in jobs:
        visit(job)
    return out

