"""GLUE loader on the real TSV files (skipped, saying why, when they are absent) and metrics."""
import sys
import types

import numpy as np
import pandas as pd
import pytest

from effx.data import glue
from effx.data.glue import TASKS, glue_metric, load_glue, load_glue_hf, task_spec
from effx.errors import ParameterError


def _glue_dir_or_none():
    try:
        return glue.glue_dir()
    except ParameterError:
        return None


GLUE_DIR = _glue_dir_or_none()
needs_glue = pytest.mark.skipif(
    GLUE_DIR is None, reason="GLUE TSV files not found: set EFFX_GLUE_DIR or place them at "
                             "../shared/data/glue beside the repository")

# official dev-set sizes (GLUE paper / distribution)
DEV_ROWS = {"SST-2": 872, "CoLA": 1043, "MRPC": 408, "RTE": 277, "STS-B": 1500, "WNLI": 71,
            "QNLI": 5463}
TRAIN_ROWS = {"SST-2": 67349, "CoLA": 8551, "MRPC": 3668, "RTE": 2490, "STS-B": 5749, "WNLI": 635}


@needs_glue
@pytest.mark.parametrize("task", list(DEV_ROWS))
def test_dev_sets_have_official_row_counts_and_labels(task):
    df = load_glue(task, "dev")
    assert len(df) == DEV_ROWS[task]
    assert list(df.columns) == ["sentence1", "sentence2", "label"]
    assert df["sentence1"].map(lambda s: isinstance(s, str) and len(s) > 0).all()
    spec = TASKS[task]
    if spec.sentence2 is None:
        assert df["sentence2"].isna().all()
    else:
        assert df["sentence2"].map(lambda s: isinstance(s, str) and len(s) > 0).all()
    if spec.is_regression:
        assert df["label"].dtype == float and df["label"].between(0, 5).all()
        assert df["label"].nunique() > 20            # graded scores, not classes
    else:
        assert set(df["label"]) == {0, 1}


@needs_glue
@pytest.mark.parametrize("task", list(TRAIN_ROWS))
def test_train_sets_have_official_row_counts(task):
    assert len(load_glue(task, "train")) == TRAIN_ROWS[task]


@needs_glue
def test_known_rows_and_label_mappings():
    rte = load_glue("RTE", "dev")
    assert rte.loc[0, "sentence2"] == "Christopher Reeve had an accident."
    assert rte.loc[0, "label"] == 1                                  # not_entailment
    assert (rte["label"] == 0).sum() == 146                          # entailment (PROVENANCE.md)
    cola = load_glue("cola", "dev")                                  # no header: first row is data
    assert cola.loc[0, "sentence1"] == "The sailors rode the breeze clear of the rocks."
    assert (cola["label"] == 1).sum() == 721
    mrpc = load_glue("MRPC", "dev")                                  # unbalanced quotes stay text
    assert mrpc.loc[0, "sentence2"].startswith('" The foodservice pie business')
    assert mrpc.loc[0, "label"] == 1
    stsb = load_glue("sts-b", "dev")
    assert stsb.loc[0, "label"] == 5.0 and stsb.loc[1, "label"] == 4.75
    assert (load_glue("WNLI", "dev")["label"] == 0).sum() == 40


@needs_glue
def test_missing_split_names_where_it_looked():
    with pytest.raises(ParameterError, match="_partial/QNLI/train.tsv"):
        load_glue("QNLI", "train")


def test_errors_name_the_parameter(tmp_path, monkeypatch):
    with pytest.raises(ParameterError, match="'task'.*SST-2"):
        load_glue("MNLI-bogus", "dev", glue_dir=tmp_path)
    with pytest.raises(ParameterError, match="'split'"):
        load_glue("SST-2", "test", glue_dir=tmp_path)
    with pytest.raises(ParameterError, match=str(tmp_path / "SST-2" / "dev.tsv")):
        load_glue("SST-2", "dev", glue_dir=tmp_path)
    monkeypatch.setenv("EFFX_GLUE_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(ParameterError, match="EFFX_GLUE_DIR.*nowhere"):
        glue.glue_dir()
    monkeypatch.delenv("EFFX_GLUE_DIR")
    monkeypatch.setattr(glue, "_default_dirs", lambda: [tmp_path / "absent"])
    with pytest.raises(ParameterError, match="EFFX_GLUE_DIR.*absent"):
        glue.glue_dir()


def test_env_var_and_explicit_folder(tmp_path, monkeypatch):
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "dev.tsv").write_text('sentence\tlabel\na " quoted NA\t1\nnull\t0\n')
    monkeypatch.setenv("EFFX_GLUE_DIR", str(tmp_path))
    assert glue.glue_dir() == tmp_path
    df = load_glue("sst2", "validation")
    assert df["sentence1"].tolist() == ['a " quoted NA', "null"]     # no quoting, no NA parsing
    assert df["label"].tolist() == [1, 0]


def test_task_names_are_forgiving_but_exact():
    assert task_spec("sst2").name == task_spec("SST-2").name == "SST-2"
    assert task_spec("STSB").is_regression and task_spec("stsb").num_labels == 1
    with pytest.raises(ParameterError):
        task_spec("mnli")


def test_load_glue_hf_without_datasets_says_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)               # import fails
    with pytest.raises(ImportError, match="pip install datasets"):
        load_glue_hf("RTE", "dev")


def test_load_glue_hf_maps_columns(monkeypatch):
    calls = {}

    class FakeSplit:
        def to_pandas(self):
            return pd.DataFrame({"question": ["q?"], "sentence": ["s."], "label": [1], "idx": [0]})

    def load_dataset(path, name, split):
        calls.update(path=path, name=name, split=split)
        return FakeSplit()

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    df = load_glue_hf("QNLI", "dev")
    assert calls == {"path": "nyu-mll/glue", "name": "qnli", "split": "validation"}
    assert df.to_dict("records") == [{"sentence1": "q?", "sentence2": "s.", "label": 1}]


def test_metrics_on_known_inputs():
    assert glue_metric("SST-2", [1, 0, 1, 1], [1, 0, 0, 1]) == {"accuracy": 0.75}
    # MRPC: tp=2, fp=1, fn=1 -> precision = recall = 2/3, F1 = 2/3; accuracy 4/6
    m = glue_metric("MRPC", [1, 1, 1, 0, 0, 0], [1, 1, 0, 1, 0, 0])
    assert m == pytest.approx({"f1": 2 / 3, "accuracy": 4 / 6})
    # CoLA: Matthews = (tp*tn - fp*fn) / sqrt(...) with tp=2, tn=1, fp=1, fn=0
    mcc = (2 * 1 - 1 * 0) / np.sqrt((2 + 1) * (2 + 0) * (1 + 1) * (1 + 0))
    assert glue_metric("CoLA", [1, 1, 1, 0], [1, 1, 0, 0]) == pytest.approx({"matthews_corr": mcc})
    assert glue_metric("CoLA", [1, 0, 1, 0], [1, 0, 1, 0])["matthews_corr"] == 1.0
    # STS-B: a monotone but non-linear map keeps Spearman at 1, lowers Pearson
    gold = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    m = glue_metric("STS-B", gold ** 3, gold)
    assert m["spearman"] == pytest.approx(1.0) and 0.8 < m["pearson"] < 1.0
    assert glue_metric("STS-B", (2 * gold + 1)[:, None], gold)["pearson"] == pytest.approx(1.0)
    # logits are argmaxed
    assert glue_metric("RTE", [[2.0, -1.0], [0.1, 0.3]], [0, 1]) == {"accuracy": 1.0}
    with pytest.raises(ParameterError, match="predictions"):
        glue_metric("RTE", [0, 1, 1], [0, 1])
