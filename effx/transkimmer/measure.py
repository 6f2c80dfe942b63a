"""Measuring a fine-tuned Transkimmer: task predictions, kept tokens, FLOPs, wall clock.

Everything is measured against the *unpadded* baseline: the same encoder with skimming off, each
batch padded only to its own longest sequence (batch 1: no padding at all). What padding alone
would fake is measured separately (the same baseline padded to 128 / 512 tokens).
Wall clock: the baseline and Transkimmer are timed in alternation, round after round, on the same
examples with inputs collated beforehand, so load from other jobs hits both alike.
"""
from __future__ import annotations

import numpy as np
import torch

from effx.profiling import count_flops, time_callable
from effx.transkimmer.flops import Dims, baseline_flops, skim_flops
from effx.transkimmer.model import SkimBert
from effx.transkimmer.removal import skim_forward_removed
from effx.transkimmer.train import Encoded, batch_indices, collate


def dims_of(model: SkimBert) -> Dims:
    return Dims.of(model.bert.config, model.classifier.out_features,
                   getattr(model.bert, "pooler", None) is not None)


def _outputs(logits: torch.Tensor) -> np.ndarray:
    if logits.shape[-1] == 1:
        return logits[:, 0].float().cpu().numpy()
    return logits.argmax(-1).cpu().numpy()


@torch.no_grad()
def predict(model: SkimBert, data: Encoded, batch_size: int = 32, device="cpu",
            mode: str = "removed") -> dict:
    """Predictions and real tokens computed per layer, shape (N, L).

    mode: 'removed' (gather-based inference), 'masked' (the training computation), 'plain'
    (skimming off: the baseline)."""
    model.to(device).eval()
    preds, tokens = [], []
    for index in batch_indices(len(data), batch_size):
        b = collate(data, index, device)
        args = (b["input_ids"], b["attention_mask"], b["token_type_ids"])
        if mode == "removed" and model.skim:
            out = skim_forward_removed(model, *args)
            tokens.append(out.tokens_per_layer.T.cpu())
        else:
            out = model(*args, skim=(mode != "plain"))
            valid = b["attention_mask"].bool()
            if out.keep:
                tokens.append(torch.stack([(k.bool() & valid).sum(1) for k in out.keep], 1).cpu())
            else:
                tokens.append(valid.sum(1, keepdim=True).expand(-1, len(model.layers)).cpu())
        preds.append(_outputs(out.logits))
    return {"predictions": np.concatenate(preds), "tokens_per_layer": torch.cat(tokens).numpy(),
            "lengths": data.lengths}


def keep_by_layer(tokens_per_layer: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Fraction of real tokens each layer computes, over the whole split (L,)."""
    return tokens_per_layer.sum(0) / lengths.sum()


def analytic_flops(tokens_per_layer: np.ndarray, lengths: np.ndarray, dims: Dims,
                   pad_lengths=(128, 512)) -> dict[str, float]:
    """Mean FLOPs per example: unpadded baseline, Transkimmer (predictors included), and the
    baseline padded to each of `pad_lengths` (what a padded comparison would charge)."""
    out = {"baseline": float(np.mean([baseline_flops(int(n), dims) for n in lengths])),
           "transkimmer": float(np.mean([skim_flops(int(n), t, dims)
                                         for n, t in zip(lengths, tokens_per_layer)]))}
    for p in pad_lengths:
        out[f"pad{p}"] = float(baseline_flops(p, dims))
    return out


def counted_flops(model: SkimBert, data: Encoded, index, device="cpu") -> dict[str, float]:
    """Mean FLOPs per example counted by PyTorch (effx.profiling.count_flops), batch 1, unpadded."""
    base = tk = 0
    model.to(device).eval()
    with torch.no_grad():
        for i in index:
            b = collate(data, [i], device)
            args = (b["input_ids"], b["attention_mask"], b["token_type_ids"])
            base += count_flops(lambda: model(*args, skim=False))[0]
            tk += count_flops(lambda: skim_forward_removed(model, *args))[0]
    return {"baseline": base / len(index), "transkimmer": tk / len(index)}


def _runner(model, batches, skim: bool):
    def run():
        with torch.no_grad():
            for b in batches:
                if skim:
                    skim_forward_removed(model, *b)
                else:
                    model(*b, skim=False)
    return run


def _prepared(data, idx, bs, device, pad_to=None):
    out = []
    for chunk in batch_indices(len(idx), bs):
        b = collate(data, [idx[j] for j in chunk], device, pad_to=pad_to)
        out.append((b["input_ids"], b["attention_mask"], b["token_type_ids"]))
    return out


def _alternate(jobs: dict, device, repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Time every job once per round, rounds repeated: seconds per example per round."""
    samples = {k: [] for k in jobs}
    for r in range(repeats):
        for name, (fn, n) in jobs.items():
            t = time_callable(fn, device=device, warmup=warmup if r == 0 else 0, repeats=1,
                              min_sample_s=0.0)[0]
            samples[name].append(t / n)
    return samples


def wall_clock(model: SkimBert, data: Encoded, index, device="cpu", batch_sizes=(1, 32),
               repeats: int = 3) -> dict[str, list[float]]:
    """Seconds per example: 'baseline_b{B}' (skimming off, batch padded to its own longest) and
    'transkimmer_b{B}' (gather-based removal), alternated round after round."""
    model.to(device).eval()
    index, jobs = list(index), {}
    for bs in batch_sizes:
        batches = _prepared(data, index, bs, device)
        jobs[f"baseline_b{bs}"] = (_runner(model, batches, False), len(index))
        jobs[f"transkimmer_b{bs}"] = (_runner(model, batches, True), len(index))
    return _alternate(jobs, device, repeats)


def padding_wall_clock(model: SkimBert, data: Encoded, index, device="cpu", batch_size: int = 32,
                       pad_lengths=(128, 512), repeats: int = 2) -> dict[str, list[float]]:
    """Seconds per example of the plain encoder: 'unpadded_b{B}' and 'pad{P}_b{B}'."""
    model.to(device).eval()
    index = list(index)
    jobs = {f"unpadded_b{batch_size}": (_runner(model, _prepared(data, index, batch_size, device),
                                                False), len(index))}
    for p in pad_lengths:
        jobs[f"pad{p}_b{batch_size}"] = (
            _runner(model, _prepared(data, index, batch_size, device, p), False), len(index))
    jobs[f"unpadded_b{batch_size}"][0]()                   # one warm-up call, not per job
    return _alternate(jobs, device, repeats, warmup=0)


@torch.no_grad()
def skim_trace(model: SkimBert, tokenizer, data: Encoded, i: int, device="cpu") -> dict:
    """Tokens of example i and, for each, the first layer that no longer computes it
    (len(layers) = kept to the end). Deterministic (evaluation) decisions."""
    model.to(device).eval()
    b = collate(data, [i], device)
    out = model(b["input_ids"], b["attention_mask"], b["token_type_ids"])
    keep = torch.stack(out.keep, 0)[:, 0].bool().cpu()              # (L, T)
    L = keep.shape[0]
    first_skip = [int(torch.nonzero(~keep[:, t])[0]) if (~keep[:, t]).any() else L
                  for t in range(keep.shape[1])]
    return {"tokens": tokenizer.convert_ids_to_tokens(data.input_ids[i]), "skimmed_at": first_skip}
