"""Measuring a model that drops tokens (or layers): predictions, kept tokens, FLOPs, wall clock.

A *forward* is ``fn(input_ids, attention_mask, token_type_ids) -> (logits (B, C), tokens (L, B))``
(real tokens each layer computed). Every method is compared with its *reference*, the plain
encoder it was derived from, on the same examples:

* FLOPs per example, analytic (tested equal to PyTorch's count) against the **unpadded** reference,
  and counted by PyTorch on a few examples at batch 1;
* wall clock at batch 1 (no padding at all) and at batch 32 on **length-sorted** batches (the
  dev set sorted by length, cut into batches: the unpadded baseline of a batched deployment);
  separately, both on random batches padded to their longest example (what a naive batched
  baseline costs: ~2x the unpadded work on SST-2), and the reference padded to fixed widths.
  Reference and method are timed in alternation, round after round (A B A B), and each round's
  paired ratio is kept, so that drift from other jobs on the machine hits both sides alike.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from effx.profiling import count_flops, time_callable
from effx.transkimmer.data import Encoded, collate, length_sorted_batches, padded_tokens
from effx.transkimmer.flops import Dims, baseline_flops, padded_batch_flops, skim_flops
from effx.transkimmer.model import SkimBert
from effx.transkimmer.removal import skim_forward_removed

Forward = Callable[..., tuple]


def dims_of(model: SkimBert) -> Dims:
    return Dims.of(model.bert.config, model.classifier.out_features,
                   getattr(model.bert, "pooler", None) is not None)


# -- forwards ------------------------------------------------------------------------------------
def plain_forward(model: SkimBert) -> Forward:
    def fn(ids, mask, types):
        out = model(ids, mask, types, skim=False)
        return out.logits, mask.sum(1).expand(len(model.layers), -1)
    return fn


def removal_forward(model: SkimBert, states: bool = False) -> Forward:
    """Transkimmer with tokens removed. What is timed: the logits alone (``states=False``, since
    2026-12-04; the wall clock recorded before that wrote every token's final state back in
    place, ``states=True``: ``removal_paths`` measures the difference)."""
    def fn(ids, mask, types):
        out = skim_forward_removed(model, ids, mask, types, states=states)
        return out.logits, out.tokens_per_layer
    return fn


def masked_forward(model: SkimBert) -> Forward:
    """The training computation (deterministic decisions): what the ``paper`` variant learned."""
    def fn(ids, mask, types):
        out = model(ids, mask, types)
        valid = mask.bool()
        return out.logits, torch.stack([(k.bool() & valid).sum(1) for k in out.keep])
    return fn


def _outputs(logits: torch.Tensor) -> np.ndarray:
    if logits.shape[-1] == 1:
        return logits[:, 0].float().cpu().numpy()
    return logits.argmax(-1).cpu().numpy()


@torch.no_grad()
def predict(fn: Forward, data: Encoded, batch_size: int = 32, device="cpu") -> dict:
    """Predictions (N,) and real tokens per layer (N, L), in the split's order (computed on
    length-sorted batches)."""
    preds, tokens = [None] * len(data), [None] * len(data)
    for index in length_sorted_batches(data.lengths, batch_size):
        b = collate(data, index, device)
        logits, per_layer = fn(b["input_ids"], b["attention_mask"], b["token_type_ids"])
        for row, i in enumerate(index):
            preds[i] = _outputs(logits[row:row + 1])[0]
            tokens[i] = per_layer[:, row].cpu().numpy()
    return {"predictions": np.array(preds), "tokens_per_layer": np.stack(tokens),
            "lengths": data.lengths}


def keep_by_layer(tokens_per_layer: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Fraction of real tokens each layer computes, over the whole split (L,)."""
    return tokens_per_layer.sum(0) / lengths.sum()


# -- FLOPs ---------------------------------------------------------------------------------------
def analytic_flops(tokens_per_layer: np.ndarray, lengths: np.ndarray, dims: Dims,
                   reference: Dims, predictors: bool) -> dict[str, float]:
    """Mean FLOPs per example of the method (`dims`; `predictors`: Transkimmer's charged) and of
    its unpadded reference (`reference` dims)."""
    return {"reference": float(np.mean([baseline_flops(int(n), reference) for n in lengths])),
            "method": float(np.mean([skim_flops(int(n), t, dims, predictors)
                                     for n, t in zip(lengths, tokens_per_layer)]))}


def padding_flops(lengths: np.ndarray, dims: Dims, pad_lengths, batch_size: int = 32,
                  seed: int = 0) -> dict[str, float]:
    """What padding alone charges the reference: fixed widths, and random batches padded to their
    longest example ('random_b{B}')."""
    out = {f"pad{p}": float(baseline_flops(p, dims)) for p in pad_lengths}
    order = np.random.default_rng(seed).permutation(len(lengths))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    out[f"random_b{batch_size}"] = padded_batch_flops(lengths, batches, dims)
    return out


def counted_flops(fn: Forward, ref: Forward, data: Encoded, index, device="cpu") -> dict[str, float]:
    """Mean FLOPs per example counted by PyTorch (effx.profiling.count_flops), batch 1."""
    method = reference = 0
    with torch.no_grad():
        for i in index:
            b = collate(data, [i], device)
            args = (b["input_ids"], b["attention_mask"], b["token_type_ids"])
            method += count_flops(lambda: fn(*args))[0]
            reference += count_flops(lambda: ref(*args))[0]
    return {"reference": reference / len(index), "method": method / len(index)}


# -- wall clock ----------------------------------------------------------------------------------
def timing_batches(lengths, n: int, batch_size: int = 32, seed: int = 0) -> list[list[int]]:
    """About n examples timed: whole batches of the length-sorted split, chosen at random, so that
    their padding is that of sorting the full split."""
    batches = length_sorted_batches(lengths, batch_size)
    full = [b for b in batches if len(b) == batch_size] or batches
    pick = np.random.default_rng(seed).choice(len(full), min(len(full), math.ceil(n / batch_size)),
                                              replace=False)
    return [full[i] for i in sorted(pick)]


def _prepared(data: Encoded, batches, device, pad_to=None):
    out = []
    for index in batches:
        b = collate(data, index, device, pad_to=pad_to)
        out.append((b["input_ids"], b["attention_mask"], b["token_type_ids"]))
    return out


def _runner(fn: Forward, prepared):
    def run():
        with torch.no_grad():
            for args in prepared:
                fn(*args)
    return run


def alternate(calls: dict[str, tuple[Callable, int]], device="cpu", repeats: int = 3,
              group: int = 1) -> dict:
    """Seconds per example of every call, one sample per round, calls alternated in each round
    (one untimed warm-up call each first). ``group`` > 1: the calls come in consecutive groups of
    that size (the forwards compared on one set), and round r runs every group rotated by r, so
    that no forward always runs in the same place (with two, A B then B A)."""
    names = list(calls)
    groups = [names[i:i + group] for i in range(0, len(names), group)]
    samples = {k: [] for k in names}
    for r in range(repeats):
        for g in groups:
            for name in g[r % len(g):] + g[:r % len(g)]:
                run, n = calls[name]
                t = time_callable(run, device=device, warmup=1 if r == 0 else 0, repeats=1,
                                  min_sample_s=0.0)[0]
                samples[name].append(t / n)
    return samples


def timing_sets(batches, batch_size: int = 32, b1_examples: int = 64) -> dict[str, list]:
    """The example sets timed, from ``timing_batches``: 'b1' (`b1_examples` of the examples, evenly
    spread over them, one per call: per-example calls dominate the cost of timing), 'b{B}' (the
    length-sorted batches) and 'random_b{B}' (the same examples in random batches)."""
    examples = [i for b in batches for i in b]
    shuffled = np.random.default_rng(1).permutation(examples)
    random = [shuffled[i:i + batch_size].tolist() for i in range(0, len(shuffled), batch_size)]
    singles = [[i] for i in examples[::max(1, len(examples) // b1_examples)]]
    return {"b1": singles, f"b{batch_size}": batches, f"random_b{batch_size}": random}


def forward_calls(forwards: dict[str, Forward], data: Encoded, sets: dict[str, list],
                  device="cpu") -> dict[str, tuple[Callable, int]]:
    """'{forward}_{set}': a call running the forward over the set's batches, and its examples."""
    calls = {}
    for tag, bb in sets.items():
        prepared, n = _prepared(data, bb, device), sum(map(len, bb))
        calls.update({f"{name}_{tag}": (_runner(fn, prepared), n) for name, fn in forwards.items()})
    return calls


def wall_clock(fn: Forward | None, ref: Forward, data: Encoded, batches, device="cpu",
               repeats: int = 3, pad_lengths=(), batch_size: int = 32,
               b1_examples: int = 64) -> dict[str, list[float]]:
    """Per-example seconds per round: 'reference_b1', 'reference_b32' (length-sorted),
    'reference_random_b32' (the same examples in random batches: ``timing_sets``), the same three
    for 'method' when `fn` is given, and 'pad{P}_b32' (reference padded to P: one batch, since a
    batch padded to a fixed width costs the same whatever its examples). Paired ratios: see
    ``speedups``. `batches` come from ``timing_batches`` (of `batch_size`)."""
    sets = timing_sets(batches, batch_size, b1_examples)
    forwards = {"reference": ref} if fn is None else {"reference": ref, "method": fn}
    calls = forward_calls(forwards, data, sets, device)
    for p in pad_lengths:
        calls[f"pad{p}_b{batch_size}"] = (_runner(ref, _prepared(data, batches[:1], device, pad_to=p)),
                                          len(batches[0]))
    times = alternate(calls, device, repeats)
    times["padded_fraction_random"] = [padded_tokens(data.lengths, sets[f"random_b{batch_size}"]) /
                                       padded_tokens(data.lengths, batches)]
    return times


def speedups(times: dict[str, list[float]]) -> dict[str, list[float]]:
    """Paired per-round ratios: 'speedup_{tag}' = reference / method; 'padding_pad{P}_b32' =
    padded / length-sorted reference; 'padding_random_b32' = random-batch / length-sorted
    reference (what padding alone would add to a speedup)."""
    out = {}
    for name, ref in times.items():
        if name.startswith("reference_") and "method_" + name[10:] in times:
            out["speedup_" + name[10:]] = [r / m for r, m in zip(ref, times["method_" + name[10:]])]
        if name.startswith("reference_random_"):
            sorted_ = times["reference_" + name[17:]]
            out["padding_random_" + name[17:]] = [r / s for r, s in zip(ref, sorted_)]
        if name.startswith("pad"):
            base = times["reference_" + name.split("_")[1]]
            out["padding_" + name] = [p / u for p, u in zip(ref, base)]
    return out


#: the forwards ``removal_paths`` times against the plain encoder: Transkimmer's removal path
#: writing every token's final state back in place (what the wall clock timed before
#: 2026-12-04), and computing the logits alone (what it times since)
PATHS = {"states": True, "logits": False}


def removal_paths(model: SkimBert, data: Encoded, device="cpu", examples: int = 256,
                  repeats: int = 7, batch_size: int = 32) -> tuple[dict[str, list[float]], int]:
    """Seconds per example per round of the plain encoder ('reference_b1', 'reference_b32') and of
    each of ``PATHS`` ('states_b1', ...), timed in alternation on the same examples as a job's wall
    clock (``timing_batches``, length-sorted; batch 1 on 64 of them), the three in a rotated order
    each round, and the paired per-round speedups over the plain encoder ('speedup_states_b1',
    ...); and the number of examples timed."""
    batches = timing_batches(data.lengths, examples, batch_size)
    sets = timing_sets(batches, batch_size)
    sets.pop(f"random_b{batch_size}")
    forwards = {"reference": plain_forward(model),
                **{name: removal_forward(model, states) for name, states in PATHS.items()}}
    times = alternate(forward_calls(forwards, data, sets, device), device, repeats,
                      group=len(forwards))
    for name in PATHS:
        for tag in sets:
            times[f"speedup_{name}_{tag}"] = [r / t for r, t in zip(times[f"reference_{tag}"],
                                                                     times[f"{name}_{tag}"])]
    return times, sum(map(len, batches))


@torch.no_grad()
def skim_trace(removed: Callable, tokenizer, data: Encoded, i: int, device="cpu") -> dict:
    """Tokens of example i and, for each, the first layer that no longer computes it
    (len(layers) = kept to the end). removed(ids, mask, types) -> ``removal.RemovalOutput``."""
    b = collate(data, [i], device)
    out = removed(b["input_ids"], b["attention_mask"], b["token_type_ids"])
    return {"tokens": tokenizer.convert_ids_to_tokens(data.input_ids[i]),
            "skimmed_at": out.dropped_at[0].tolist()}
