"""GLUE examples for the Transkimmer study: tokenisation, batch orders and dynamic padding.

Every batch is padded only to its own longest example (dynamic padding). Three batch orders:

* ``random_batches``: a shuffled pass cut into batches (what the official code trains on);
* ``bucketed_batches``: a shuffled pass cut into pools of ``pool`` batches, each pool sorted by
  length and cut into batches, then the order of all batches shuffled: batches of similar
  lengths, hence little padding, still a fresh random composition every epoch;
* ``length_sorted_batches``: the whole split sorted by length (deterministic): the unpadded
  baseline of the wall-clock comparisons and the order of evaluation.

``epoch_batches`` seeds the order of each epoch of each training stage from (seed, stage, epoch),
so no stage or epoch replays another's batches.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch


@dataclass
class Encoded:
    """A tokenised split: ragged token lists (no padding) and labels."""
    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    labels: np.ndarray
    pad_id: int

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(x) for x in self.input_ids])


def encode(tokenizer, frame: pd.DataFrame, max_length: int = 128) -> Encoded:
    """Tokenise a GLUE frame (sentence1, sentence2 or None, label), truncating to max_length."""
    s1 = frame["sentence1"].tolist()
    pair = frame["sentence2"].notna().any()
    s2 = frame["sentence2"].tolist() if pair else None
    enc = tokenizer(s1, s2, truncation=True, max_length=max_length)
    types = enc.get("token_type_ids") or [[0] * len(x) for x in enc["input_ids"]]
    return Encoded(enc["input_ids"], types, frame["label"].to_numpy(), tokenizer.pad_token_id or 0)


def load_split(task: str, split: str, tokenizer, max_length: int = 128, subset: int = 0) -> Encoded:
    """One GLUE split, tokenised; ``subset`` > 0 keeps a fixed random sample of that many examples
    (seed 0: dev order would bias the labels)."""
    from effx.data.glue import load_glue
    frame = load_glue(task, split)
    if subset and len(frame) > subset:
        frame = frame.sample(n=subset, random_state=0).reset_index(drop=True)
    return encode(tokenizer, frame, max_length)


def collate(data: Encoded, index, device="cpu", pad_to: int | None = None) -> dict:
    """Batch of examples `index`, padded to the longest of them (or to `pad_to`); its tensors on
    `device`, and ``padded`` (bool, known here on the host: a model need not ask the device)."""
    index = list(index)
    width = max(max(len(data.input_ids[i]) for i in index), pad_to or 0)
    ids = torch.full((len(index), width), data.pad_id, dtype=torch.long)
    types = torch.zeros((len(index), width), dtype=torch.long)
    mask = torch.zeros((len(index), width), dtype=torch.long)
    for row, i in enumerate(index):
        n = len(data.input_ids[i])
        ids[row, :n] = torch.tensor(data.input_ids[i])
        types[row, :n] = torch.tensor(data.token_type_ids[i])
        mask[row, :n] = 1
    labels = torch.as_tensor(data.labels[index])
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "labels": labels}
    return {**{k: to_device(v, device) for k, v in batch.items()},
            "padded": any(len(data.input_ids[i]) < width for i in index)}


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """A host tensor on `device`; to a GPU from pinned memory, asynchronously (a copy from pageable
    memory waits for everything queued on the GPU before it)."""
    if torch.device(device).type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def _cut(order, batch_size: int) -> list[list[int]]:
    order = [int(i) for i in order]
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def sequential_batches(n: int, batch_size: int) -> list[list[int]]:
    return _cut(range(n), batch_size)


def random_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    return _cut(rng.permutation(n), batch_size)


def bucketed_batches(lengths, batch_size: int, rng: np.random.Generator,
                     pool: int = 50) -> list[list[int]]:
    """Batches of similar lengths: shuffle, sort pools of ``pool`` batches by length, cut, and
    shuffle the batch order. Every example appears exactly once."""
    lengths = np.asarray(lengths)
    order = rng.permutation(len(lengths))
    batches = []
    for start in range(0, len(order), pool * batch_size):
        chunk = order[start:start + pool * batch_size]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += _cut(chunk, batch_size)
    return [batches[i] for i in rng.permutation(len(batches))]


def length_sorted_batches(lengths, batch_size: int, index=None) -> list[list[int]]:
    """`index` (default: all) sorted by length, cut into batches: the least padding possible."""
    lengths = np.asarray(lengths)
    index = np.arange(len(lengths)) if index is None else np.asarray(index)
    return _cut(index[np.argsort(lengths[index], kind="stable")], batch_size)


def epoch_batches(lengths, batch_size: int, seed: int, stage: int, epoch: int,
                  bucketed: bool = True) -> list[list[int]]:
    """The batches of one epoch of one training stage, seeded by (seed, stage, epoch)."""
    rng = np.random.default_rng([seed, stage, epoch])
    if bucketed:
        return bucketed_batches(lengths, batch_size, rng)
    return random_batches(len(lengths), batch_size, rng)


def padded_tokens(lengths, batches) -> int:
    """Positions computed when each batch is padded to its longest example."""
    lengths = np.asarray(lengths)
    return int(sum(len(b) * lengths[b].max() for b in batches))
