"""Study: Transkimmer on GLUE (issue 5): accuracy, FLOPs and real wall-clock speedups.

``run(P)`` trains and measures every point not yet in the store (resumable: a point is one
(task, method, variant, lambda, encoder, epochs, ...) combination; trained results are cached as
points, so a rerun trains nothing already done). ``summary(table)`` turns the tidy store into one
row per (task, variant, lambda) with the speedups, computed from the stored times and FLOPs.
"""
from __future__ import annotations

import functools
import numbers
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from effx import params as p
from effx.errors import ParameterError

PAD_LENGTHS = (128, 512)
TIMING_EXAMPLES, TIMING_REPEATS = 64, 3          # Transkimmer vs baseline, batch 1 and 32
PAD_TIMING_EXAMPLES, PAD_TIMING_REPEATS = 32, 2   # padding-only effect (one batch of 32)
COUNTED_FLOPS_EXAMPLES = 16
TRACE_EXAMPLE = 0


def available_tasks() -> list[str]:
    """GLUE tasks with both a train and a dev file here."""
    from effx.data.glue import TASKS, tsv_path
    out = []
    for name in TASKS:
        try:
            tsv_path(name, "train"), tsv_path(name, "dev")
        except (ParameterError, OSError):
            continue
        out.append(name)
    return out


def _tasks(name, value):
    allowed = available_tasks()
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, (list, tuple)) or not value or any(v not in allowed for v in value):
        raise ParameterError(name, value, ", ".join(allowed), why="tasks available locally")
    return list(value)


def _lambdas(name, value):
    """A non-empty list of positive numbers, or {task: list} (tasks not named: no Transkimmer)."""
    def one(v):
        if (not isinstance(v, (list, tuple)) or not v or
                any(isinstance(x, bool) or not isinstance(x, numbers.Real) or x <= 0 for x in v)):
            raise ParameterError(name, value, "a non-empty list of positive numbers, e.g. [0.5, 2.0],"
                                 " or a dict task -> such a list")
        return sorted(set(float(x) for x in v))
    if isinstance(value, dict):
        return {str(k): one(v) for k, v in value.items()}
    return one(value)


def _epochs(name, value):
    """A positive number (fractions allowed), or {task: number} (tasks not named: 1.0)."""
    def one(v):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or v <= 0:
            raise ParameterError(name, value, "a positive number, or a dict task -> positive number")
        return float(v)
    if isinstance(value, dict):
        return {str(k): one(v) for k, v in value.items()}
    return one(value)


def _encoder(name, value):
    if value == "minilm" or (isinstance(value, str) and Path(value).expanduser().is_dir()):
        return value if value == "minilm" else str(Path(value).expanduser())
    raise ParameterError(name, value, "'minilm' or the path of a local BERT-family checkpoint",
                         why="not 'minilm' and not an existing folder")


def _subset(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ParameterError(name, value, "an integer >= 0 (0 = full train and dev sets)")
    return int(value)


PARAMETERS = {
    "tasks": p.Param(_tasks, "GLUE tasks, among those with train and dev files here"),
    "encoder": p.Param(_encoder, "'minilm' (packaged all-MiniLM-L6-v2) or a checkpoint folder"),
    "lambdas": p.Param(_lambdas, "skim-loss weights (positive numbers), or a dict task -> list"),
    "variant": p.choice("paper", "fixed", doc="'fixed' (masked softmax, pads excluded) or 'paper'"),
    "epochs": p.Param(_epochs, "training epochs (fractions allowed), or a dict task -> epochs"),
    "max_length": p.positive_int("tokens kept per example (truncation)", maximum=512),
    "batch_size": p.positive_int("training batch size"),
    "device": p.device(),
    "subset": p.Param(_subset, "train/dev examples for quick runs; 0 = full sets"),
}


def lambdas_for(P: dict, task: str) -> list[float]:
    lam = P["lambdas"]
    return lam.get(task, []) if isinstance(lam, dict) else lam


def epochs_for(P: dict, task: str) -> float:
    e = P["epochs"]
    return e.get(task, 1.0) if isinstance(e, dict) else e


def timing_sizes(subset: int) -> tuple[int, int]:
    """Examples timed (Transkimmer vs baseline; padding effect): smaller for quick subsets."""
    if not subset:
        return TIMING_EXAMPLES, PAD_TIMING_EXAMPLES
    return max(4, min(TIMING_EXAMPLES, subset // 4)), max(2, min(PAD_TIMING_EXAMPLES, subset // 8))


def point_of(P: dict, task: str, method: str, variant: str = "none", lam: float = 0.0,
             init: str = "pretrained") -> dict:
    """One trained model, from the pretrained encoder or (``init='finetuned'``) from the task's
    fine-tuned baseline: see ``measure_point``."""
    pt = {"task": task, "method": method, "variant": variant, "lambda": lam,
          "encoder": P["encoder"], "epochs": epochs_for(P, task), "max_length": P["max_length"],
          "batch_size": P["batch_size"], "subset": P["subset"], "device": P["device"], "seed": 0}
    if init != "pretrained":
        pt["init"] = init
    return pt


def baseline_of(point: dict) -> dict:
    """The baseline point a Transkimmer point starts from (same task, budget and data)."""
    base = {k: v for k, v in point.items() if k != "init"}
    return {**base, "method": "baseline", "variant": "none", "lambda": 0.0}


def checkpoint_path(point: dict) -> Path:
    """Where the fine-tuned baseline of ``point`` is cached (untracked: data/results/checkpoints)."""
    import hashlib
    from effx.results import point_key, results_root
    digest = hashlib.sha1(point_key(baseline_of(point)).encode()).hexdigest()[:16]
    return results_root() / "checkpoints" / f"transkimmer_baseline_{point['task']}_{digest}.pt"


def planned_points(P: dict) -> list[dict]:
    pts = []
    for task in P["tasks"]:
        pts.append(point_of(P, task, "baseline"))
        lams = lambdas_for(P, task)
        if lams:   # the baseline trained on for the same budget again: Transkimmer's equal
            pts.append(point_of(P, task, "baseline", init="finetuned"))
        pts += [point_of(P, task, "transkimmer", P["variant"], lam, "finetuned") for lam in lams]
    return pts


def _split(task: str, split: str, subset: int, tokenizer, max_length: int):
    from effx.data.glue import load_glue
    from effx.transkimmer.train import encode
    frame = load_glue(task, split)
    if subset and len(frame) > subset:   # a fixed random sample (dev order would bias labels)
        frame = frame.sample(n=subset, random_state=0).reset_index(drop=True)
    return encode(tokenizer, frame, max_length)


def _metrics(task: str, preds, labels, prefix: str = "") -> dict:
    from effx.data.glue import glue_metric
    from effx.results import metric
    return {prefix + k: metric(v, "score") for k, v in glue_metric(task, preds, labels).items()}


def _save_checkpoint(model, path: Path) -> None:
    """torch.save to a temporary file renamed into place: an interrupted save leaves nothing."""
    import torch
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)


def measure_point(point: dict, log=print) -> tuple[dict, dict]:
    """Train one point and measure it: (metrics, info). A baseline point fine-tunes the
    pretrained encoder; with ``init='finetuned'`` a point starts from that baseline and trains
    for the same budget again, with skim predictors (Transkimmer) or without (the baseline with
    Transkimmer's total training budget, against which its accuracy is compared)."""
    from effx.data.glue import task_spec
    from effx.results import metric
    from effx.transkimmer import measure as M
    from effx.transkimmer.model import SkimBert, load_encoder
    from effx.transkimmer.train import TrainConfig, seed_everything, train

    task, skim = point["task"], point["method"] == "transkimmer"
    bert, tok = load_encoder(point["encoder"])
    tr = _split(task, "train", point["subset"], tok, point["max_length"])
    dev = _split(task, "dev", point["subset"], tok, point["max_length"])
    num_labels = task_spec(task).num_labels
    cfg = TrainConfig(epochs=point["epochs"], batch_size=point["batch_size"],
                      skim_lambda=point["lambda"], seed=point["seed"])
    info = {"train_examples": len(tr), "dev_examples": len(dev), "lr": cfg.lr,
            "predictor_lr": cfg.predictor_lr}
    seed_everything(point["seed"])
    model = SkimBert(bert, num_labels, skim=False)
    ckpt = checkpoint_path(point)
    continued = point.get("init") == "finetuned"
    if continued:
        # Start from the task's fine-tuned baseline (the same training as the baseline point,
        # cached by it; retrained identically when the cache is gone). Transkimmer then trains
        # predictors and encoder together with the skim loss. From the pretrained encoder, with a random
        # classifier, the skim loss wins before the task loss carries any signal: every token but
        # CLS is skimmed within ~100 steps and accuracy stays at chance (findings, 2026-12-01).
        if ckpt.exists():
            import torch
            model.load_state_dict(torch.load(ckpt, map_location="cpu"))
            info["init_train_s"] = None
        else:
            t0 = time.perf_counter()
            train(model, tr, TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed),
                  point["device"], desc=f"{task} baseline (init)")
            info["init_train_s"] = time.perf_counter() - t0
            _save_checkpoint(model, ckpt)
        info["init_checkpoint"] = ckpt.name
        seed_everything(point["seed"])
    if skim:
        skimmer = SkimBert(model.bert, num_labels, skim=True, variant=point["variant"])
        skimmer.classifier.load_state_dict(model.classifier.state_dict())
        model = skimmer
    t0 = time.perf_counter()
    hist = train(model, tr, cfg, point["device"], desc=f"{task} {point['method']} {point['lambda']}")
    train_s = time.perf_counter() - t0
    if not continued and not skim:
        _save_checkpoint(model, ckpt)              # the start of this task's Transkimmer points
    metrics = {"train_s": metric(train_s, "s"), "train_steps": metric(hist["steps"], "steps")}
    info["final_train_kept"] = float(np.mean(hist["kept"][-20:]))
    mode = "removed" if skim else "plain"
    out = M.predict(model, dev, 32, point["device"], mode)
    metrics.update(_metrics(task, out["predictions"], dev.labels))
    dims = M.dims_of(model)
    order = np.random.default_rng(0).permutation(len(dev))
    n_time, n_pad = timing_sizes(point["subset"])
    if not skim:   # what padding alone would fake: same baseline padded to 128 / 512 tokens
        for k, v in M.analytic_flops(out["tokens_per_layer"], out["lengths"], dims,
                                     PAD_LENGTHS).items():
            metrics[f"flops_{k}"] = metric(v, "FLOP/example")
        times = M.padding_wall_clock(model, dev, order[:n_pad], point["device"],
                                     32, PAD_LENGTHS, repeats=PAD_TIMING_REPEATS)
        for k, s in times.items():
            metrics[f"time_{k}"] = metric(float(np.median(s)), "s/example", s)
        return metrics, info
    if point["variant"] == "paper":      # the function it was trained as (removal differs)
        masked = M.predict(model, dev, 32, point["device"], "masked")
        metrics.update(_metrics(task, masked["predictions"], dev.labels, "masked_"))
    keep = M.keep_by_layer(out["tokens_per_layer"], out["lengths"])
    metrics.update({f"keep_l{i}": metric(k, "fraction") for i, k in enumerate(keep)})
    for k, v in M.analytic_flops(out["tokens_per_layer"], out["lengths"], dims, ()).items():
        metrics[f"flops_{k}"] = metric(v, "FLOP/example")
    for k, v in M.counted_flops(model, dev, order[:COUNTED_FLOPS_EXAMPLES], point["device"]).items():
        metrics[f"counted_flops_{k}"] = metric(v, "FLOP/example")
    idx = order[:n_time]
    times = M.wall_clock(model, dev, idx, point["device"], (1, 32), repeats=TIMING_REPEATS)
    for k, s in times.items():
        metrics[f"time_{k}"] = metric(float(np.median(s)), "s/example", s)
    info["timing_examples"] = len(idx)
    info["trace"] = M.skim_trace(model, tok, dev, TRACE_EXAMPLE, point["device"])
    info["mean_length"] = float(out["lengths"].mean())
    return metrics, info


def run(P: dict, store=None, log=None):
    """Measure every planned point missing from the store; returns the store."""
    import torch
    from effx.results import ResultStore
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    store = store or ResultStore("transkimmer_glue", P["profile"])
    todo = [pt for pt in planned_points(P) if not store.is_done(pt)]
    log(f"transkimmer_glue/{P['profile']}: {len(todo)} of {len(planned_points(P))} points to run")
    if todo:
        store.start_run(P, P["device"])
    for pt in todo:
        log(f"  {pt['task']} {pt['method']} {pt['variant']} lambda={pt['lambda']}")
        metrics, info = measure_point(pt, log)
        info["threads"] = torch.get_num_threads()
        store.record(pt, metrics, "ok", info)
    return store


# -- analysis ------------------------------------------------------------------------------------
def main_metric(task: str) -> str:
    from effx.data.glue import task_spec
    return task_spec(task).metrics[0]


@functools.lru_cache(maxsize=None)            # reads the task's TSVs: once per task and subset
def majority_metric(task: str, subset: int = 0) -> float:
    """The task's main dev metric for a model that always predicts the majority training class
    (0 for regression: a constant has no correlation). A baseline not clearly above it learned
    nothing, and a skimming comparison against it means nothing."""
    from effx.data.glue import glue_metric, load_glue, task_spec
    spec = task_spec(task)
    if spec.is_regression:
        return 0.0
    train, dev = load_glue(task, "train"), load_glue(task, "dev")
    if subset and len(dev) > subset:               # the same sample as ``_split``
        dev = dev.sample(n=subset, random_state=0).reset_index(drop=True)
    label = train["label"].mode().iloc[0]
    return glue_metric(task, np.full(len(dev), label), dev["label"].to_numpy())[main_metric(task)]


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per Transkimmer point: baseline and Transkimmer metric (x100), kept fraction,
    FLOPs speedups (analytic with predictors, counted), wall-clock speedups at batch 1 / 32, and
    the speedups padding alone would fake (baseline padded to 128 / 512 vs unpadded)."""
    if table.empty:
        return pd.DataFrame()
    ok = table[table.status == "ok"].copy()
    ok["init"] = ok["init"].fillna("pretrained") if "init" in ok else "pretrained"
    key = ["task", "method", "variant", "lambda", "init", "encoder", "epochs", "max_length",
           "subset", "device"]
    wide = ok.pivot_table(index=key, columns="metric", values="value", aggfunc="first").reset_index()
    rows = []
    for _, r in wide[wide.method == "transkimmer"].iterrows():
        m = main_metric(r.task)
        same = ["task", "encoder", "epochs", "max_length", "subset", "device"]   # its start point
        bases = wide[(wide.method == "baseline") &
                     np.logical_and.reduce([wide[k] == r[k] for k in same])]
        first = bases[bases.init == "pretrained"]            # FLOPs, padding: the plain baseline
        b = first.iloc[0] if len(first) else pd.Series(dtype=float)
        # accuracy: against the baseline with Transkimmer's training budget when it was trained
        equal = bases[bases.init == r.init]
        e = equal.iloc[0] if len(equal) else b
        get = lambda row, k: row[k] if k in row and pd.notna(row[k]) else np.nan  # noqa: E731
        keeps = [c for c in wide.columns if str(c).startswith("keep_l")]
        rows.append({
            "task": r.task, "epochs": r.epochs, "variant": r.variant, "lambda": r["lambda"], "metric": m,
            "majority": 100 * majority_metric(r.task, int(r.subset)),
            "equal_budget": bool(len(equal)),      # False: `baseline` is the once-trained one
            "baseline": 100 * get(e, m), "baseline_1x": 100 * get(b, m), "transkimmer": 100 * r[m],
            "delta": 100 * (r[m] - get(e, m)),
            "kept": float(np.nanmean([r[c] for c in keeps])),
            "flops_speedup": r.flops_baseline / r.flops_transkimmer,
            "counted_flops_speedup": r.counted_flops_baseline / r.counted_flops_transkimmer,
            "wall_b1": r.time_baseline_b1 / r.time_transkimmer_b1,
            "wall_b32": r.time_baseline_b32 / r.time_transkimmer_b32,
            "fake_flops_pad128": get(b, "flops_pad128") / get(b, "flops_baseline"),
            "fake_flops_pad512": get(b, "flops_pad512") / get(b, "flops_baseline"),
            "fake_wall_pad128_b32": get(b, "time_pad128_b32") / get(b, "time_unpadded_b32"),
            "fake_wall_pad512_b32": get(b, "time_pad512_b32") / get(b, "time_unpadded_b32"),
            **({"masked_transkimmer": 100 * r[f"masked_{m}"]} if f"masked_{m}" in r and
               pd.notna(r.get(f"masked_{m}")) else {}),
        })
    out = pd.DataFrame(rows)
    if len(out):
        out["wall_b32_over_flops"] = out.wall_b32 / out.flops_speedup
        # the baseline learned the task: more than 1 point above the majority-class predictor
        out["learned"] = out[["baseline", "baseline_1x"]].min(axis=1) > out.majority + 1.0
    return out


def keep_table(table: pd.DataFrame) -> pd.DataFrame:
    """Long table of kept fraction by layer: task, variant, lambda, layer, kept."""
    k = table[(table.status == "ok") & table.metric.astype(str).str.startswith("keep_l")].copy()
    k["layer"] = k.metric.str[6:].astype(int)
    return k[["task", "variant", "lambda", "layer", "value"]].rename(columns={"value": "kept"})


def trace_frame(table: pd.DataFrame, task: str, variant: str, lam: float,
                epochs: float | None = None) -> pd.DataFrame:
    """Token x layer grid of the stored example (1 = computed by that layer, 0 = skimmed)."""
    col = "info_trace"
    rows = table[(table.task == task) & (table.variant == variant) & (table["lambda"] == lam)]
    if epochs is not None:
        rows = rows[rows.epochs == epochs]
    trace = rows[col].dropna().iloc[0] if col in rows and rows[col].notna().any() else None
    if trace is None:
        return pd.DataFrame()
    L = max(trace["skimmed_at"]) if trace["skimmed_at"] else 0
    L = max(L, int(rows.metric.astype(str).str.startswith("keep_l").sum()))
    grid = [[int(layer < s) for layer in range(L)] for s in trace["skimmed_at"]]
    return pd.DataFrame(grid, index=[f"{i}:{t}" for i, t in enumerate(trace["tokens"])],
                        columns=[f"L{l}" for l in range(L)])


def headline(summ: pd.DataFrame) -> pd.DataFrame:
    """One Transkimmer point per (task, variant), at the task's largest training budget: the
    largest FLOPs speedup within 1 point of the baseline metric, else the point closest to it."""
    if summ.empty:
        return summ
    summ = summ[summ.learned & (summ.epochs == summ.groupby("task").epochs.transform("max"))]
    rows = []
    for _, g in summ.groupby(["task", "variant"], sort=False):
        ok = g[g.delta >= -1.0]
        rows.append(ok.loc[ok.flops_speedup.idxmax()] if len(ok) else g.loc[g.delta.idxmax()])
    return pd.DataFrame(rows, columns=summ.columns).reset_index(drop=True)


def glue_names(head: pd.DataFrame, prefix: str = "tk") -> dict[str, float]:
    """Key numbers for myst-nb glue: tk_<task>_<quantity> (task lower-case, no dash)."""
    out = {}
    for _, r in head.iterrows():
        t = f"{prefix}_{r.task.lower().replace('-', '')}" + ("" if r.variant == "fixed" else f"_{r.variant}")
        for k in ("baseline", "transkimmer", "delta", "flops_speedup", "counted_flops_speedup",
                  "wall_b1", "wall_b32", "kept", "lambda", "fake_flops_pad128", "fake_flops_pad512",
                  "fake_wall_pad128_b32", "fake_wall_pad512_b32", "wall_b32_over_flops"):
            if k in r and pd.notna(r[k]):
                out[f"{t}_{k}"] = float(r[k])
    return out


def provenance(store) -> pd.DataFrame:
    """Runs behind a store: date, commit, device, threads-free hardware summary."""
    rows = []
    for run in store.runs().values():
        hw = run.get("hardware", {})
        rows.append({"date": run.get("date"), "commit": str(run.get("commit"))[:10],
                     "device": hw.get("gpu_name") or hw.get("cpu_model"),
                     "torch": run.get("versions", {}).get("torch")})
    return pd.DataFrame(rows)


def target_verdict(head: pd.DataFrame) -> str:
    """The issue's target on SST-2, checked against the numbers (markdown)."""
    r = head[(head.task == "SST-2") & (head.variant == "fixed")]
    if r.empty:
        return "No SST-2 result with the fixed variant yet: the target cannot be checked."
    r = r.iloc[0]
    acc_ok, flops_ok = r.delta >= -1.0, r.flops_speedup >= 3.0
    wall_ok = r.wall_b32 >= 0.6 * r.flops_speedup
    parts = [f"SST-2, fixed variant, lambda = {r['lambda']:g}: accuracy {r.transkimmer:.1f} vs "
             f"{r.baseline:.1f} for the baseline ({r.delta:+.1f} points; target: no worse than -1).",
             f"FLOPs speedup {r.flops_speedup:.2f}x over the unpadded baseline (target >= 3x"
             + ("): met." if flops_ok else f"): short by {3.0 - r.flops_speedup:.2f}x."),
             f"Batch-32 wall-clock speedup {r.wall_b32:.2f}x, i.e. {r.wall_b32_over_flops:.2f} of "
             f"the FLOPs speedup (target >= 0.6" + ("): met." if wall_ok else "): not met."),
             f"Batch-1 wall-clock speedup {r.wall_b1:.2f}x."]
    if not acc_ok:
        parts.append(f"Accuracy target missed by {-1.0 - r.delta:.1f} points.")
    return " ".join(parts)


def paper_comparison(head: pd.DataFrame, summ: pd.DataFrame | None = None) -> str:
    """Plain comparison with the paper's claim (10.97x average GLUE speedup, < 1% accuracy loss).
    ``summ`` (the full summary) names the tasks left out because their baseline learned nothing."""
    f = head[head.variant == "fixed"] if len(head) else head
    skipped = []
    if summ is not None and len(summ):    # judged at each task's largest training budget
        last = summ[summ.epochs == summ.groupby("task").epochs.transform("max")]
        skipped = sorted(set(last.task) - set(last.task[last.learned]))
    left_out = (f" Left out: {', '.join(skipped)}, whose baseline did not beat the majority-class "
                "predictor at this training budget." if skipped else "")
    if f.empty:
        return "No task with a baseline that learned it has a result yet." + left_out
    mean_speed = float(np.mean(f.flops_speedup))
    worst = f.loc[f.delta.idxmin()]
    return (f"The paper claims a 10.97x average FLOPs speedup on GLUE (BERT-base, batch 1, FLOPs "
            f"counted with skimmed tokens removed) for < 1% accuracy loss. Here, with MiniLM, over "
            f"{len(f)} task(s) ({', '.join(f.task)}), taking per task the largest FLOPs speedup within "
            f"1 point of the equal-budget baseline (else the point closest to it), the mean FLOPs "
            f"speedup over the unpadded baseline is {mean_speed:.2f}x (wall clock at batch 32: "
            f"{float(np.mean(f.wall_b32)):.2f}x, batch 1: {float(np.mean(f.wall_b1)):.2f}x); the "
            f"largest metric change is {worst.delta:+.1f} points ({worst.task}). Padding the baseline "
            f"alone would multiply these by {float(np.mean(f.fake_flops_pad128)):.2f}x (pad to 128) or "
            f"{float(np.mean(f.fake_flops_pad512)):.2f}x (pad to 512) in FLOPs on these dev sets."
            + left_out)