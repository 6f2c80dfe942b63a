"""Long Range Arena-style classification tasks, generated or read offline: one record per task.

Stand-ins for the LRA tasks (Tay et al., 2021) that SPION (Yoon, Han, Moon, arXiv 2309.12578)
is evaluated on, built from what exists offline here:

- ``listops``: ListOps generated with the LRA settings (``effx.data.listops``).
- ``image``: Fashion-MNIST as sequences of grey levels (``effx.data.images``), for LRA Image.
- ``text``: byte-level BBC news classification (``effx.data.text_bytes``), for LRA Text.

Every task returns the same record, a ``TokenDataset``: token ids (N, T) int64, a key padding
mask (N, T) bool (True = real token) and labels (N,) int64, where T is the requested length.
Everything is deterministic for a seed. ``TASKS`` is the registry; ``load_task`` the one entry.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from effx.errors import ParameterError

SPLITS = ("train", "test")


@dataclass(frozen=True)
class TokenDataset:
    """One split of one task, padded (or cut) to a fixed length T."""
    input_ids: torch.Tensor          # (N, T) int64
    key_padding_mask: torch.Tensor   # (N, T) bool, True = real token
    labels: torch.Tensor             # (N,) int64
    vocab_size: int
    num_classes: int
    task: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[1])

    def batch(self, index, device="cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids (b, T), key padding mask (b, T), labels (b,)) of the examples `index`."""
        index = torch.as_tensor(np.asarray(index), dtype=torch.long)
        return (self.input_ids[index].to(device), self.key_padding_mask[index].to(device),
                self.labels[index].to(device))


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ParameterError("split", split, ", ".join(SPLITS))
    return split


def pad_sequences(seqs: Sequence[np.ndarray], length: int, pad_id: int = 0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Token arrays of any lengths -> ids (N, length) and mask (N, length); longer ones are cut."""
    ids = np.full((len(seqs), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), length), dtype=bool)
    for row, seq in enumerate(seqs):
        n = min(len(seq), length)
        ids[row, :n] = seq[:n]
        mask[row, :n] = True
    return torch.from_numpy(ids), torch.from_numpy(mask)


def subset_index(n_total: int, n: int | None, seed: int, name: str = "n") -> np.ndarray:
    """The first `n` of a seeded permutation of range(n_total) (all of it, permuted, for None)."""
    if n is not None and not 1 <= n <= n_total:
        raise ParameterError(name, n, f"an integer in [1, {n_total}]")
    order = np.random.default_rng(seed).permutation(n_total)
    return order if n is None else order[:n]


@dataclass(frozen=True)
class LraTask:
    """What the model and the training loop need to know about a task, and how to load it."""
    name: str
    description: str
    vocab_size: int
    num_classes: int
    n_layers: int        # of the SPION LRA model: 4 for ListOps, 2 otherwise
    lra_length: int      # the length LRA (and SPION) use
    load: Callable[..., TokenDataset]   # load(split, length, n=None, seed=0, **options)


# Deferred imports: the task modules import TokenDataset from here.
def _listops(split, length, n=None, seed=0, **options):
    from effx.data.listops import load_listops
    return load_listops(split, length, n, seed=seed, **options)


def _image(split, length, n=None, seed=0, **options):
    from effx.data.images import load_fashion_mnist
    return load_fashion_mnist(split, length, n, seed=seed, **options)


def _text(split, length, n=None, seed=0, **options):
    from effx.data.text_bytes import load_text_bytes
    return load_text_bytes(split, length, n, seed=seed, **options)


TASKS: dict[str, LraTask] = {t.name: t for t in (
    LraTask("listops", "ListOps (MIN, MAX, MED, SUM_MOD over digits), generated", 16, 10, 4, 2048,
            _listops),
    LraTask("image", "Fashion-MNIST as a sequence of grey levels (LRA Image stand-in)", 256, 10, 2,
            1024, _image),
    LraTask("text", "BBC news as bytes, 5 topics (LRA Text stand-in)", 256, 5, 2, 4096, _text),
)}


def task_spec(name: str) -> LraTask:
    if name not in TASKS:
        raise ParameterError("task", name, ", ".join(TASKS))
    return TASKS[name]


def load_task(name: str, split: str, length: int, n: int | None = None, seed: int = 0,
              **options) -> TokenDataset:
    """One split of task `name` at sequence length `length`, `n` examples (None: all)."""
    if int(length) < 1:
        raise ParameterError("length", length, "an integer >= 1")
    return task_spec(name).load(check_split(split), int(length), n, seed=seed, **options)
