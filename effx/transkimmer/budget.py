"""How long a protocol of jobs takes on this machine, before running it.

A training step's time grows with the tokens it computes (batch x padded width). ``time_steps``
times real training steps (``train.train_stage``, the job's own model and stage) on batches of the
job's training set chosen across the range of widths; ``fit_step_time`` fits
seconds = a + b x padded tokens; ``stage_seconds`` sums the fit over every batch the job's stage
will draw. Measurement (dev predictions, FLOPs, wall clock) is timed separately
(``execute.measure_job`` on an untrained model costs what it will cost trained, or a bit more:
nothing is skimmed yet).
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from effx.transkimmer.data import Encoded, load_split
from effx.transkimmer.execute import fresh_model, stage_of
from effx.transkimmer.jobs import Job
from effx.transkimmer.train import Stage, train_stage


def _subset(data: Encoded, index) -> Encoded:
    index = list(index)
    return Encoded([data.input_ids[i] for i in index], [data.token_type_ids[i] for i in index],
                   data.labels[index], data.pad_id)


def time_steps(job: Job, n_batches: int = 8, steps_per_batch: int = 3) -> pd.DataFrame:
    """Seconds of training steps of `job` on `n_batches` of its stage's batches, picked at evenly
    spaced quantiles of padded width (first step of each batch untimed): columns tokens, width,
    seconds (wall clock) and cpu_seconds (this process's CPU time: with one thread, the wall
    clock of an idle core, whatever else shares the machine)."""
    model, tokenizer = fresh_model(job)
    data = load_split(job.task, "train", tokenizer, job.max_length, job.subset)
    stage = stage_of(job)
    batches = stage.batches(data.lengths)
    widths = np.array([data.lengths[b].max() for b in batches])
    picks = np.argsort(widths, kind="stable")[np.linspace(0, len(batches) - 1, n_batches).astype(int)]
    rows = []
    for i in picks:
        part = _subset(data, batches[i])
        one = Stage(**{**stage.__dict__, "epochs": steps_per_batch + 1.0, "bucketed": False,
                       "batch_size": len(batches[i]), "frozen_epochs": 0.0})
        stamps = []
        train_stage(model, part, one, device=job.device, log=lambda m: None,
                    on_step=lambda s: stamps.append((time.perf_counter(), time.process_time())))
        per_step = np.diff(np.array(stamps), axis=0)     # the first step (warm-up) is not timed
        rows.append({"tokens": int(len(batches[i]) * widths[i]), "width": int(widths[i]),
                     "seconds": float(np.median(per_step[:, 0])),
                     "cpu_seconds": float(np.median(per_step[:, 1]))})
    return pd.DataFrame(rows)


def fit_step_time(samples: pd.DataFrame, column: str = "cpu_seconds") -> tuple[float, float]:
    """(a, b) of seconds = a + b x padded tokens, least squares."""
    b, a = np.polyfit(samples.tokens, samples[column], 1)
    return float(a), float(b)


def stage_seconds(job: Job, fit: tuple[float, float], lengths) -> dict:
    """Predicted training time of `job`'s own stage over training lengths `lengths`."""
    a, b = fit
    stage = stage_of(job)
    batches = stage.batches(lengths)
    tokens = np.array([len(x) * lengths[x].max() for x in batches])
    return {"steps": len(batches), "seconds": float(np.sum(a + b * tokens)),
            "mean_step_s": float(np.mean(a + b * tokens))}
