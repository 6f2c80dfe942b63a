"""One protocol on two machines: the committed GPU run (profile ``gpu``) beside the CPU's reference
runs (``full``) of the same jobs, and why token removal that saves FLOPs can still lose time.

``side_by_side`` pairs every job of the GPU run with the CPU's job of the same task, method,
setting and seed; ``removal_overhead`` counts the operators and host reads of one forward
(``effx.profiling.count_dispatches``), the quantities that set the time of a small model on a
GPU, where each operator costs microseconds of launch whatever its size.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from effx.profiling import count_dispatches
from effx.transkimmer.jobs import PROTOCOL, Job
from effx.transkimmer.report import setting, summary

MATCH = ["task", "method", "setting", "seed"]
COLUMNS = ["value", "delta", "kept", "flops_speedup", "wall_b1", "wall_b32",
           "ms_b1", "ms_b32", "ref_ms_b1", "ref_ms_b32"]


def side_by_side(gpu: pd.DataFrame, cpu: pd.DataFrame) -> pd.DataFrame:
    """Every job of the GPU run (result tables as ``ResultStore.table()`` gives them), its columns
    suffixed ``_gpu``, beside the CPU's same job (``_cpu``; empty where the CPU has none)."""
    def measured(table):
        s = summary(table)
        return s[MATCH + COLUMNS] if len(s) else pd.DataFrame(columns=MATCH + COLUMNS)
    return measured(gpu).merge(measured(cpu), on=MATCH, how="left", suffixes=("_gpu", "_cpu"))


def sentences(pairs: pd.DataFrame, device: str) -> str:
    """The chapter's paragraph on the GPU run, from its numbers."""
    tk = pairs[pairs.method == "transkimmer"]
    base = pairs[pairs.method == "baseline"]
    if tk.empty or base.empty:
        return "*The GPU run has no Transkimmer result beside its baseline yet.*"

    def span(col, fmt="{:.2f}"):
        lo, hi = tk[col].min(), tk[col].max()
        return fmt.format(lo) if np.isclose(lo, hi) else f"{fmt.format(lo)} to {fmt.format(hi)}"
    speedups = tk[["wall_b1_gpu", "wall_b32_gpu"]].to_numpy()
    verdict = ("slower, not faster" if speedups.max() < 1 else "faster" if speedups.min() > 1
               else "faster in some of these cases, slower in others")
    ms = tk.ms_b1_gpu
    spread = (ms.max() - ms.min()) / ms.min()
    plain = pd.concat([pairs[pairs.method.isin(["baseline", "baseline_continued"])].ms_b1_gpu,
                       tk.ref_ms_b1_gpu]).dropna()
    return (
        f"On the {device}, Transkimmer ({', '.join(tk.setting)}) kept {span('kept_gpu', '{:.0%}')} "
        f"of the tokens ({span('flops_speedup_gpu')}x fewer FLOPs) at "
        f"{span('delta_gpu', '{:+.1f}')} points against the equal-budget baseline (CPU, same "
        f"settings and seed: {span('delta_cpu', '{:+.1f}')}). Its wall-clock speedup over the "
        f"baseline was {span('wall_b1_gpu')}x at batch 1 and {span('wall_b32_gpu')}x at batch 32 "
        f"(CPU: {span('wall_b1_cpu')}x and {span('wall_b32_cpu')}x): {verdict}. "
        f"Timed in alternation at batch 1, the baseline took {span('ref_ms_b1_gpu')} ms per "
        f"example and Transkimmer {span('ms_b1_gpu')} ms"
        + (f", {spread:.0%} apart although the settings kept {span('kept_gpu', '{:.0%}')} of the "
           "tokens: on the GPU the time of so small a model follows how many operators are "
           "launched, one after another, and how often the host waits for the device, more than "
           "their size"
           if len(tk) > 1 and spread < 0.05 else "")
        + f" (the CPU's baseline: {span('ref_ms_b1_cpu')} ms)."
        + (f" The plain encoder's batch-1 time over this run's {len(plain)} measurements of it "
           f"(the plain jobs' own wall-clock units and Transkimmer's alternations) ranged from "
           f"{plain.min():.2f} to {plain.max():.2f} ms, {plain.max() / plain.min() - 1:.0%} apart: "
           "a speedup is only ever taken within one alternation."
           if len(plain) > 1 else ""))


def device_name(table: pd.DataFrame) -> str:
    """The device the wall clock of a result table was measured on (its records' info)."""
    names = table.get("info_device_name", pd.Series(dtype=object)).dropna()
    return str(names.iloc[0]) if len(names) else "GPU"


def removal_overhead(encoder: str = "minilm", task: str = "SST-2", example: int = 0,
                     seed: int = 0) -> pd.DataFrame:
    """Operators and host reads of one forward at batch 1 (the task's dev example ``example``):
    the plain encoder against Transkimmer with tokens removed (the logits alone, as timed, and with
    every token's final state written back in place), its predictors untrained but set to skim
    about half of the tokens reaching each layer (output bias zero; what they skim hardly changes
    the count); and one predictor with its keep decision alone (each layer runs one)."""
    from effx.transkimmer.data import collate, load_split
    from effx.transkimmer.encoders import load_encoder
    from effx.transkimmer.measure import plain_forward, removal_forward
    from effx.transkimmer.model import SkimBert
    from effx.transkimmer.predictor import keeps
    torch.manual_seed(seed)
    bert, tokenizer = load_encoder(encoder)
    model = SkimBert(bert, 2, skim=True).eval()
    for predictor in model.predictors:
        predictor.out.bias.data.zero_()
    b = collate(load_split(task, "dev", tokenizer, 128, 0), [example], "cpu")
    args = (b["input_ids"], b["attention_mask"], b["token_type_ids"])
    h = model.embed(args[0], args[2]).detach()

    def one_predictor(*_):                              # what each layer adds before it runs
        return keeps(model.predictors[0](h))
    rows = []
    for name, forward in (("plain encoder (the baseline)", plain_forward(model)),
                          ("Transkimmer, tokens removed, logits only (timed)",
                           removal_forward(model)),
                          ("Transkimmer, tokens removed, every state written back",
                           removal_forward(model, states=True)),
                          ("one skim predictor and its decision", one_predictor)):
        ops, reads = count_dispatches(lambda: forward(*args))
        rows.append({"forward": name, "operators": ops, "host reads": reads})
    out = pd.DataFrame(rows).set_index("forward")
    out["operators vs baseline"] = out.operators / out.operators.iloc[0]
    return out


def removal_paths_frame(table: pd.DataFrame) -> pd.DataFrame:
    """One row per job whose removal paths were timed (``measure.removal_paths``; a result table
    as ``ResultStore.table()`` gives it): its speedups over the plain encoder at batch 1 and 32
    with every state written back ('states_b1', ...) and with the logits alone ('logits_b1', ...),
    the device they were timed on,
    medians of the paired rounds, and 'gain_b1' / 'gain_b32': the median over rounds of the
    states path's time over the logits path's (above 1: the logits alone are faster)."""
    if table.empty or "measure" not in table:
        return pd.DataFrame()
    rows = table[table.measure.eq("removal_paths") & table.status.eq("ok")
                 & table.protocol.eq(PROTOCOL)]
    out, by_job, device = [], {}, {}
    for _, r in rows.iterrows():
        job = Job.from_key(r.dropna().to_dict())
        by_job.setdefault(job, {})[r.metric] = r.samples
        device[job] = r.get("info_device_name", "?")
    for job, m in by_job.items():
        row = {"task": job.task, "setting": setting(job), "seed": job.seed, "device": device[job]}
        for tag in ("b1", "b32"):
            for path in ("states", "logits"):
                row[f"{path}_{tag}"] = float(np.median(m[f"paths_speedup_{path}_{tag}"]))
            row[f"gain_{tag}"] = float(np.median(np.divide(m[f"paths_states_{tag}"],
                                                           m[f"paths_logits_{tag}"])))
        out.append(row)
    return pd.DataFrame(out)


def removal_paths_sentences(frame: pd.DataFrame) -> str:
    """What ``removal_paths_frame`` shows, from its numbers."""
    if frame.empty:
        return "*No removal-path timing recorded here yet (the study's `removal_paths` flag).*"

    def span(col):
        lo, hi = frame[col].min(), frame[col].max()
        return f"{lo:.2f}x" if np.isclose(lo, hi, atol=0.005) else f"{lo:.2f}-{hi:.2f}x"
    return (f"On the {' and '.join(frame.device.unique())}, for {len(frame)} trained model(s), writing every token's state "
            f"back took {span('gain_b1')} the time of computing the logits alone at batch 1 and "
            f"{span('gain_b32')} at batch 32 (medians of paired rounds); against the plain encoder, "
            f"the speedup went from {span('states_b1')} to {span('logits_b1')} at batch 1 and "
            f"from {span('states_b32')} to {span('logits_b32')} at batch 32.")
