"""GLUE (Wang et al., 2018) from the official TSV files, offline, with the official metrics.

The files are read where they are (``EFFX_GLUE_DIR``, else ``../shared/data/glue`` beside the
repository); they are never copied into the project. Layout: ``<dir>/<TASK>/{train,dev}.tsv``;
a task with only some splits may sit under ``<dir>/_partial/<TASK>/`` (QNLI: dev only).

Formats are those of the GLUE distribution (see the data folder's PROVENANCE.md):
- CoLA has no header: ``source, label, original_label, sentence``.
- MRPC's header starts with a UTF-8 BOM, and sentences hold unbalanced ``"``: every file is read
  with ``quoting=csv.QUOTE_NONE`` (GLUE TSVs never quote) and ``utf-8-sig``.
- RTE and QNLI labels are strings (entailment = 0, not_entailment = 1, as Hugging Face numbers them).
- STS-B is a regression (score in [0, 5]).

Every loader returns the same frame: ``sentence1``, ``sentence2`` (None for single-sentence
tasks) and ``label`` (int, or float for STS-B).
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from effx.errors import MissingData, ParameterError
from effx.provenance import REPO_ROOT

ENV_VAR = "EFFX_GLUE_DIR"
SPLITS = ("train", "dev")
_NLI_LABELS = {"entailment": 0, "not_entailment": 1}


@dataclass(frozen=True)
class GlueTask:
    """How one task's TSV files are laid out, and how it is scored."""
    name: str                      # official folder name, e.g. "SST-2"
    sentence1: str | int           # column name, or position when the file has no header
    sentence2: str | int | None    # None for single-sentence tasks
    label: str | int
    num_labels: int                # 1 = regression (STS-B)
    metrics: tuple[str, ...]       # as returned by glue_metric, main metric first
    hf_name: str                   # config of the Hugging Face "nyu-mll/glue" dataset
    hf_columns: tuple[str, str | None]
    header: bool = True
    label_map: dict[str, int] = field(default_factory=dict)   # string labels -> ints

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1


TASKS: dict[str, GlueTask] = {t.name: t for t in (
    GlueTask("CoLA", 3, None, 1, 2, ("matthews_corr",), "cola", ("sentence", None), header=False),
    GlueTask("SST-2", "sentence", None, "label", 2, ("accuracy",), "sst2", ("sentence", None)),
    GlueTask("MRPC", "#1 String", "#2 String", "Quality", 2, ("f1", "accuracy"), "mrpc",
             ("sentence1", "sentence2")),
    GlueTask("STS-B", "sentence1", "sentence2", "score", 1, ("spearman", "pearson"), "stsb",
             ("sentence1", "sentence2")),
    GlueTask("RTE", "sentence1", "sentence2", "label", 2, ("accuracy",), "rte",
             ("sentence1", "sentence2"), label_map=_NLI_LABELS),
    GlueTask("WNLI", "sentence1", "sentence2", "label", 2, ("accuracy",), "wnli",
             ("sentence1", "sentence2")),
    GlueTask("QNLI", "question", "sentence", "label", 2, ("accuracy",), "qnli",
             ("question", "sentence"), label_map=_NLI_LABELS),
)}


def task_spec(task: str) -> GlueTask:
    """The spec of `task`; accepts 'SST-2', 'sst2', 'sst-2', ... (case and dashes ignored)."""
    key = str(task).lower().replace("-", "").replace("_", "")
    for name, spec in TASKS.items():
        if key == name.lower().replace("-", ""):
            return spec
    raise ParameterError("task", task, ", ".join(TASKS))


def _default_dirs() -> list[Path]:
    return [REPO_ROOT.parent / "shared" / "data" / "glue"]


def glue_dir() -> Path:
    """Folder of the GLUE TSVs: $EFFX_GLUE_DIR, else ../shared/data/glue beside the repository."""
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise ParameterError(ENV_VAR, env, "a folder holding <TASK>/{train,dev}.tsv",
                                 why=f"{path} is not a folder")
        return path
    for path in _default_dirs():
        if path.is_dir():
            return path
    raise MissingData("GLUE", [f"${ENV_VAR} (not set)", *_default_dirs()],
                      f"set {ENV_VAR} to a folder holding <TASK>/{{train,dev}}.tsv (the official "
                      "GLUE files), or use effx.data.glue.load_glue_hf online")


def _root(given: str | Path | None) -> Path:
    """The folder passed by the caller, else glue_dir() (a parameter of that name shadows it)."""
    return Path(given) if given is not None else glue_dir()


def _split(split: str) -> str:
    split = "dev" if split == "validation" else split
    if split not in SPLITS:
        raise ParameterError("split", split, "'train', 'dev' (or 'validation')")
    return split


def tsv_path(task: str, split: str = "train", glue_dir: str | Path | None = None) -> Path:
    """Path of one split's TSV; ParameterError naming every place it looked when absent."""
    spec, split = task_spec(task), _split(split)
    root = _root(glue_dir)
    candidates = [root / spec.name / f"{split}.tsv", root / "_partial" / spec.name / f"{split}.tsv"]
    for path in candidates:
        if path.is_file():
            return path
    raise ParameterError("split", split, f"a split present for {spec.name}",
                         why="no file at " + " or ".join(map(str, candidates)))


def _to_labels(values: pd.Series, spec: GlueTask) -> pd.Series:
    if spec.is_regression:
        return values.astype(float)
    if spec.label_map:
        unknown = sorted(set(values) - spec.label_map.keys())
        if unknown:
            raise ValueError(f"{spec.name}: unexpected labels {unknown[:5]}")
        return values.map(spec.label_map).astype(int)
    return values.astype(int)


def _frame(s1, s2, labels) -> pd.DataFrame:
    s1 = pd.Series(s1, dtype=object).reset_index(drop=True)
    s2 = (pd.Series([None] * len(s1), dtype=object) if s2 is None
          else pd.Series(s2, dtype=object).reset_index(drop=True))
    return pd.DataFrame({"sentence1": s1, "sentence2": s2,
                         "label": pd.Series(labels).reset_index(drop=True)})


def load_glue(task: str, split: str = "train", glue_dir: str | Path | None = None) -> pd.DataFrame:
    """One GLUE split from the official TSV: columns sentence1, sentence2 (or None), label."""
    spec = task_spec(task)
    path = tsv_path(spec.name, split, glue_dir)
    raw = pd.read_csv(path, sep="\t", header=0 if spec.header else None, quoting=csv.QUOTE_NONE,
                      dtype=str, keep_default_na=False, encoding="utf-8-sig")
    s2 = None if spec.sentence2 is None else raw[spec.sentence2]
    return _frame(raw[spec.sentence1], s2, _to_labels(raw[spec.label], spec))


def load_glue_hf(task: str, split: str = "train") -> pd.DataFrame:
    """The same frame from Hugging Face ``datasets`` (online; 'dev' is HF's 'validation')."""
    spec, split = task_spec(task), _split(split)
    try:
        import datasets
    except ImportError as exc:
        raise ImportError("load_glue_hf needs the 'datasets' package (pip install datasets) and a "
                          "network connection; offline, use load_glue() on the GLUE TSV files "
                          f"(${ENV_VAR})") from exc
    ds = datasets.load_dataset("nyu-mll/glue", spec.hf_name,
                               split="validation" if split == "dev" else split)
    df = ds.to_pandas()
    c1, c2 = spec.hf_columns
    labels = df["label"].astype(float if spec.is_regression else int)
    return _frame(df[c1], None if c2 is None else df[c2], labels)


def glue_metric(task: str, predictions, labels) -> dict[str, float]:
    """Official GLUE metrics: accuracy; F1 + accuracy (MRPC); Matthews corr. (CoLA);
    Pearson + Spearman (STS-B). Classification predictions may be labels (N,) or logits (N, C)."""
    from scipy import stats
    from sklearn.metrics import f1_score, matthews_corrcoef

    spec = task_spec(task)
    pred, gold = np.asarray(predictions), np.asarray(labels)
    if spec.is_regression:
        pred, gold = pred.astype(float).reshape(len(pred), -1)[:, 0], gold.astype(float).ravel()
    elif pred.ndim == 2:
        pred = pred.argmax(axis=1)
    if pred.shape != gold.shape or pred.size == 0:
        raise ParameterError("predictions", f"shape {pred.shape}",
                             f"one prediction per label (labels have shape {gold.shape})")
    if spec.is_regression:
        return {"pearson": float(stats.pearsonr(pred, gold)[0]),
                "spearman": float(stats.spearmanr(pred, gold)[0])}
    pred, gold = pred.astype(int), gold.astype(int)
    out = {"accuracy": float(np.mean(pred == gold))}
    if spec.name == "MRPC":
        out = {"f1": float(f1_score(gold, pred)), **out}
    if spec.name == "CoLA":
        return {"matthews_corr": float(matthews_corrcoef(gold, pred))}
    return out
