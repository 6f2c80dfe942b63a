"""Executing one ``Job``: train (or load, or resume) its model, then measure it.

``run_job(job, checkpoint_dir)`` is what a worker process calls; it returns ``(metrics, info)``.
Trained weights live in ``checkpoint_dir/<job.checkpoint_name()>/``: ``final.pt`` (weights and
training info) once a stage is done, ``progress.pt`` (resumable state) while it runs, under a file
lock so that two workers never train the same model at once (the second waits, then loads).
A job whose required checkpoint is missing trains it first: the same weights as a separate run,
since every stage seeds itself (batches from (seed, stage, epoch), torch RNG from (seed, stage)).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from effx.runner.progress import eta
from effx.transkimmer import measure as M
from effx.transkimmer.data import Encoded, length_sorted_batches, load_split, collate
from effx.transkimmer.encoders import cut_layers, load_encoder
from effx.transkimmer.jobs import LOGITS_TIMED, Job
from effx.transkimmer.loss import lambda_to_paper, official_fill_ratio
from effx.transkimmer.model import SkimBert
from effx.transkimmer.removal import skim_forward_removed
from effx.transkimmer.topk import check_prune_layers, flops_fraction, ratio_for_target, topk_forward
from effx.transkimmer.train import Stage, save_atomic, train_stage


def stage_of(job: Job) -> Stage:
    """The training stage a job runs (fine-tuning for baseline and fewer_layers; stage 2 else)."""
    common = dict(seed=job.seed, batch_size=job.batch_size, bucketed=job.bucketed,
                  weight_decay=job.weight_decay, warmup=job.warmup,
                  freeze_word_embeddings=job.freeze_word_embeddings)
    if job.method in ("baseline", "fewer_layers"):
        return Stage(1, job.epochs, job.lr, **common)
    if job.method == "baseline_continued":
        return Stage(2, job.skim_epochs, job.skim_lr, **common)
    if job.method == "transkimmer":
        return Stage(2 if job.init == "finetuned" else 1, job.skim_epochs, job.skim_lr,
                     predictor_lr=job.predictor_lr, skim_lambda=job.skim_lambda,
                     distill=job.distill, distill_temperature=job.distill_temperature,
                     frozen_epochs=job.frozen_epochs, **common)
    raise ValueError(f"{job.method} does not train")


def fresh_model(job: Job) -> tuple[SkimBert, object]:
    """(model with pre-trained encoder weights and a seeded new head / predictors, tokenizer)."""
    from effx.data.glue import task_spec
    torch.manual_seed(job.seed)
    bert, tokenizer = load_encoder(job.encoder)
    if job.method == "fewer_layers":
        cut_layers(bert, job.layers, job.layer_choice)
    skim = job.method == "transkimmer"
    model = SkimBert(bert, task_spec(job.task).num_labels, skim=skim, variant=job.variant,
                     tau=job.tau, keep_bias=job.keep_bias)
    return model.to(job.device), tokenizer


@contextlib.contextmanager
def _locked(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@torch.no_grad()
def teacher_logits(model: SkimBert, data: Encoded, cache: Path, device="cpu",
                   log: Callable = print, log_every_s: float = 30.0) -> torch.Tensor:
    """The baseline's logits (N, C) on every training example, in evaluation mode; cached. The
    pass says how far it is, with an ETA, every ``log_every_s``."""
    if cache.exists():
        return torch.load(cache)
    what = f"the baseline's logits on {len(data)} training examples (distillation's targets)"
    log(what)
    model.eval()
    out = torch.empty(len(data), model.classifier.out_features)
    batches = list(length_sorted_batches(data.lengths, 64))
    t0 = t_log = time.perf_counter()
    for i, index in enumerate(batches, 1):
        b = collate(data, index, device)
        out[index] = model(b["input_ids"], b["attention_mask"], b["token_type_ids"],
                           skim=False).logits.float().cpu()
        now = time.perf_counter()
        if now - t_log >= log_every_s and i < len(batches):
            log(f"{what}: batch {i}/{len(batches)}, {eta(now - t0, i, len(batches))}")
            t_log = now
    save_atomic(out, cache)
    return out


def trained_model(job: Job, checkpoint_dir, *, log: Callable = print, checkpoint_every_s=180.0,
                  on_step=None) -> tuple[SkimBert, object, dict]:
    """(trained model, tokenizer, training info): loaded when its checkpoint exists, resumed when
    a stage was interrupted, trained (with whatever it requires) otherwise."""
    opts = dict(log=log, checkpoint_every_s=checkpoint_every_s, on_step=on_step)
    if not job.trains:
        base_job = job.requires()[0]
        model, tokenizer, info = trained_model(base_job, checkpoint_dir, **opts)
        return model, tokenizer, {"baseline_checkpoint": base_job.checkpoint_name()}
    folder = Path(checkpoint_dir) / job.checkpoint_name()
    with _locked(folder):
        model, tokenizer = fresh_model(job)
        final = folder / "final.pt"
        if final.exists():
            saved = torch.load(final, map_location=job.device, weights_only=False)
            model.load_state_dict(saved["model"])
            log(f"{job.label}: trained weights loaded ({folder.name})")
            return model.eval(), tokenizer, saved["info"]
        train = load_split(job.task, "train", tokenizer, job.max_length, job.subset)
        info, teacher = {"checkpoint": folder.name}, None
        for base_job in job.requires():
            base, _, _ = trained_model(base_job, checkpoint_dir, **opts)
            info["baseline_checkpoint"] = base_job.checkpoint_name()
            if job.distill:
                teacher = teacher_logits(base, train, Path(checkpoint_dir) /
                                         base_job.checkpoint_name() / "train_logits.pt", job.device,
                                         log=log)
            if job.method == "baseline_continued" or job.init == "finetuned":
                missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
                if unexpected or any(not k.startswith("predictors.") for k in missing):
                    raise RuntimeError(f"{base_job.checkpoint_name()} does not fit {job.label}")
            del base
        hist = train_stage(model, train, stage_of(job), state_path=folder / "progress.pt",
                           teacher=teacher, device=job.device, label=job.label, **opts)
        rho = official_fill_ratio(train.lengths, job.batch_size)
        info.update(train_examples=len(train), train_steps=hist.pop("steps"),
                    train_s=hist.pop("train_s"), curves=hist, official_fill_ratio=rho)
        if job.method == "transkimmer" and job.variant == "fixed":
            info["lambda_official_equivalent"] = lambda_to_paper(job.skim_lambda, rho)
        save_atomic({"model": model.state_dict(), "info": info, "train_key": job.train_key()}, final)
        (folder / "job.json").write_text(json.dumps(job.train_key(), indent=1, sort_keys=True))
        (folder / "progress.pt").unlink(missing_ok=True)
        return model.eval(), tokenizer, info


def loss_curve_gap(trained: dict, earlier: list[dict]) -> float | None:
    """Largest gap between the training-loss curve of the weights in hand (``trained_model``'s
    info) and the job's recorded training run among ``earlier`` records: 0 for the checkpoint that
    run saved, float rounding (about 1e-7) for one retrained since, more where a skim decision
    flipped on the way; inf when the curves differ in length; None when either is missing
    (methods that train nothing)."""
    mine = (trained.get("curves") or {}).get("loss")
    recorded = next((c["loss"] for r in reversed(earlier)
                     if isinstance(c := r.get("info", {}).get("curves"), dict)), None)
    if mine is None or recorded is None:
        return None
    if len(mine) != len(recorded):
        return float("inf")
    return float(np.max(np.abs(np.subtract(mine, recorded)))) if mine else 0.0


def _method_forwards(job: Job, model: SkimBert, tokenizer, log) -> tuple:
    """(forward or None for 'the reference itself', removal forward for traces, info)."""
    if job.method == "transkimmer":
        return M.removal_forward(model), lambda *a: skim_forward_removed(model, *a), {}
    if job.method == "fewer_layers":
        return M.plain_forward(model), None, {}
    if job.method == "topk_pruning":
        layers = check_prune_layers(job.prune_layers, len(model.layers))
        train = load_split(job.task, "train", tokenizer, job.max_length, job.subset)
        ratio = ratio_for_target(train.lengths, job.flops_target, layers, M.dims_of(model))
        achieved = flops_fraction(train.lengths, ratio, layers, M.dims_of(model))
        log(f"{job.label}: keep ratio {ratio:.4f} per pruning point before layers {layers}: "
            f"{achieved:.3f} of the FLOPs on the training lengths")

        def removed(*a, states=True):
            return topk_forward(model, *a, ratio=ratio, prune_layers=layers, states=states)

        def fn(*a):
            out = removed(*a, states=False)
            return out.logits, out.tokens_per_layer
        return fn, removed, {"topk_ratio": ratio, "prune_layers": list(layers),
                             "topk_train_flops_fraction": achieved}
    return None, None, {}


def _setup(job: Job, model: SkimBert, tokenizer, log):
    dev = load_split(job.task, "dev", tokenizer, job.max_length, job.dev_subset)
    model.to(job.device).eval()
    reference = model                  # fewer layers: the full-depth encoder (FLOPs and timing only)
    if job.method == "fewer_layers":
        reference = fresh_model(job.with_method("baseline"))[0].eval()
    fn, removed, info = _method_forwards(job, model, tokenizer, log)
    return dev, reference, M.plain_forward(reference), fn, removed, info


def evaluate_job(job: Job, model: SkimBert, tokenizer, *, log: Callable = print) -> tuple[dict, dict]:
    """Dev metric, kept tokens and FLOPs of a trained model (no timing): (metrics, info)."""
    from effx.data.glue import glue_metric, task_spec
    from effx.results import metric
    dev, reference, ref, fn, removed, info = _setup(job, model, tokenizer, log)
    log(f"{job.label}: evaluating on {len(dev)} dev examples")
    out = M.predict(fn or ref, dev, 32, job.device)
    scores = glue_metric(job.task, out["predictions"], dev.labels)
    metrics = {k: metric(v, "score") for k, v in scores.items()}
    if not task_spec(job.task).is_regression:   # per dev example, in order: paired comparisons
        info["dev_correct"] = "".join("01"[int(p == y)] for p, y in zip(out["predictions"], dev.labels))
    if job.method == "transkimmer" and job.variant == "paper":   # the function it was trained as
        masked = M.predict(M.masked_forward(model), dev, 32, job.device)
        metrics.update({f"masked_{k}": metric(v, "score") for k, v in
                        glue_metric(job.task, masked["predictions"], dev.labels).items()})
    if removed is not None:
        keep = M.keep_by_layer(out["tokens_per_layer"], out["lengths"])
        metrics.update({f"keep_l{i}": metric(k, "fraction") for i, k in enumerate(keep)})
        info["trace"] = M.skim_trace(removed, tokenizer, dev, 0, job.device)
    dims, ref_dims = M.dims_of(model), M.dims_of(reference)
    flops = M.analytic_flops(out["tokens_per_layer"], out["lengths"], dims, ref_dims,
                             predictors=job.method == "transkimmer")
    flops.update(M.padding_flops(dev.lengths, ref_dims, sorted({job.max_length, 512})))
    order = np.random.default_rng(0).permutation(len(dev))[:job.counted_flops_examples]
    counted = M.counted_flops(fn or ref, ref, dev, order, job.device)
    metrics.update({f"flops_{k}": metric(v, "FLOP/example") for k, v in flops.items()})
    metrics.update({f"counted_flops_{k}": metric(v, "FLOP/example") for k, v in counted.items()})
    info.update(dev_examples=len(dev), mean_length=float(dev.lengths.mean()))
    return metrics, info


def time_job(job: Job, model: SkimBert, tokenizer, *, log: Callable = print) -> tuple[dict, dict]:
    """Wall clock of a trained model against its reference, alternating (batch 1 and batch 32,
    length-sorted; random padded batches apart): (metrics, info). Run it on an idle machine:
    never beside training."""
    dev, reference, ref, fn, removed, info = _setup(job, model, tokenizer, log)
    batches = M.timing_batches(dev.lengths, job.timing_examples, 32)
    log(f"{job.label}: timing {sum(map(len, batches))} examples, {job.timing_repeats} rounds")
    times = M.wall_clock(fn, ref, dev, batches, job.device, job.timing_repeats,
                         pad_lengths=(job.max_length,) if job.method == "baseline" else ())
    info = {"padded_fraction_random": times.pop("padded_fraction_random")[0],
            "timing_examples": sum(map(len, batches))}
    if removed is not None:            # the records before this field timed states=True
        info["timed_forward"] = LOGITS_TIMED
    return {**_timing_metrics(times, "time_"), **_timing_metrics(M.speedups(times))}, info


def _timing_metrics(samples: dict[str, list[float]], prefix: str = "") -> dict:
    """Metric entries (median, unit, samples) of timing samples: ratios ('speedup_*', 'padding_*')
    in x, the rest in seconds per example."""
    from effx.results import metric
    return {prefix + k: metric(float(np.median(s)),
                               "x" if k.startswith(("speedup_", "padding_")) else "s/example", s)
            for k, s in samples.items()}


def time_removal_paths(job: Job, model: SkimBert, tokenizer, *,
                       log: Callable = print) -> tuple[dict, dict]:
    """A Transkimmer job's removal path writing every token's state back against the logits alone,
    each against the plain encoder (``measure.removal_paths``): metrics 'paths_*', (metrics, info).
    Alone on the machine, as ``time_job``."""
    dev, *_ = _setup(job, model, tokenizer, log)
    log(f"{job.label}: timing the removal paths, {job.timing_repeats} rounds")
    times, examples = M.removal_paths(model, dev, job.device, job.timing_examples,
                                      job.timing_repeats)
    return (_timing_metrics(times, "paths_"),
            {"paths_examples": examples, "paths_order": "rotated"})


def measure_job(job: Job, model: SkimBert, tokenizer, *, log: Callable = print) -> tuple[dict, dict]:
    """``evaluate_job`` and ``time_job`` together: (metrics, info)."""
    metrics, info = evaluate_job(job, model, tokenizer, log=log)
    timed, timing_info = time_job(job, model, tokenizer, log=log)
    return {**metrics, **timed}, {**info, **timing_info}


def run_job(job: Job, checkpoint_dir, *, log: Callable = print, checkpoint_every_s: float = 180.0,
            on_step: Callable[[int], None] | None = None, timing: bool = True) -> tuple[dict, dict]:
    """Train (or load / resume) and measure one job: (metrics, info) ready to record.
    on_step(step) is called after every training step (tests interrupt through it).
    timing=False: evaluate only (the wall clock then comes from ``time_job`` on an idle machine)."""
    t0 = time.perf_counter()
    model, tokenizer, info = trained_model(job, checkpoint_dir, log=log,
                                           checkpoint_every_s=checkpoint_every_s, on_step=on_step)
    measure = measure_job if timing else evaluate_job
    metrics, measured = measure(job, model, tokenizer, log=log)
    from effx.results import metric
    if "train_s" in info:
        metrics["train_s"] = metric(info["train_s"], "s")
        metrics["train_steps"] = metric(info["train_steps"], "steps")
    info = {**info, **measured, "threads": torch.get_num_threads(), "job_s": time.perf_counter() - t0}
    return metrics, info
