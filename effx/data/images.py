"""Image classification as pixel sequences: Fashion-MNIST (Xiao, Rasul, Vollgraf, 2017).

A stand-in for LRA Image (grey CIFAR-10 as 1024 grey levels). Files: the IDX files of the Debian
package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist/``; another folder through
``$EFFX_FASHION_MNIST_DIR``), 60,000 training and 10,000 test images of 28 x 28 grey levels,
10 classes, read with numpy (IDX: big-endian magic ``0x0000 08 <ndim>``, then one uint32 per
dimension, then the unsigned bytes, row-major).

Sequence: the image's rows one after the other (raster order), one token per pixel, token id =
grey level (vocabulary 256; no padding: every token is real). Length L must be a square s * s:
s = 28 keeps the image as it is (784 tokens); otherwise the image becomes s x s by

- ``resize="bilinear"`` (default): bilinear interpolation with antialiasing (PyTorch's
  ``interpolate``), rounded to the nearest grey level; s < 28 downsamples (short CPU runs),
  s > 28 upsamples (e.g. 32 x 32 = 1024 as LRA Image, 64 x 64 = 4096);
- ``resize="pad"``: the 28 x 28 image centred on a black s x s canvas (s >= 28).
"""
from __future__ import annotations

import functools
import gzip
import math
import os
import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from effx.data.lra import TokenDataset, check_split, subset_index
from effx.errors import MissingData, ParameterError

ENV_VAR = "EFFX_FASHION_MNIST_DIR"
DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot")
SIDE = 28
RESIZE_MODES = ("bilinear", "pad")
INSTALL = (f"sudo apt-get install dataset-fashion-mnist (installs {DEFAULT_DIR}), or set "
           f"${ENV_VAR} to a folder holding the four Fashion-MNIST *-ubyte(.gz) files")


def fashion_mnist_dirs() -> list[Path]:
    """Where the files are looked for: $EFFX_FASHION_MNIST_DIR when set (only there), else the
    Debian package's folder."""
    env = os.environ.get(ENV_VAR)
    return [Path(env).expanduser()] if env else [DEFAULT_DIR]


def _find(stem: str) -> Path:
    looked = []
    for folder in fashion_mnist_dirs():
        for name in (stem + ".gz", stem):
            path = folder / name
            looked.append(path)
            if path.is_file():
                return path
    raise MissingData("Fashion-MNIST", looked, INSTALL)


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (optionally gzipped) of unsigned bytes as a read-only array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes (magic {raw[:4].hex()})")
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != math.prod(shape):
        raise ValueError(f"{path}: {data.size} bytes of data for shape {shape}")
    return data.reshape(shape)


def fashion_mnist_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28) uint8, labels (N,) uint8) of one split (each file read once per process)."""
    images_stem, labels_stem = FILES[check_split(split)]
    return _arrays(_find(images_stem), _find(labels_stem))


@functools.lru_cache(maxsize=2)
def _arrays(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.shape[1:] != (SIDE, SIDE) or images.shape[0] != labels.shape[0]:
        raise ValueError(f"Fashion-MNIST: images {images.shape} ({images_path}), "
                         f"labels {labels.shape} ({labels_path})")
    return images, labels


def to_side(images: np.ndarray, side: int, resize: str = "bilinear") -> torch.Tensor:
    """(N, 28, 28) uint8 -> (N, side, side) int64 grey levels (see the module docstring)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.int64)
    if side == SIDE:
        return x
    if resize == "pad":
        if side < SIDE:
            raise ParameterError("length", side * side, f"a square s*s with s >= {SIDE} for resize='pad'")
        before = (side - SIDE) // 2
        return F.pad(x, (before, side - SIDE - before, before, side - SIDE - before))
    if resize != "bilinear":
        raise ParameterError("resize", resize, ", ".join(RESIZE_MODES))
    y = F.interpolate(x[:, None].float(), size=(side, side), mode="bilinear", align_corners=False,
                      antialias=True)[:, 0]
    return y.round().clamp(0, 255).to(torch.int64)


def load_fashion_mnist(split: str, length: int = SIDE * SIDE, n: int | None = None, seed: int = 0,
                       resize: str = "bilinear") -> TokenDataset:
    """`n` images of a split (a seeded random subset; None: all), as sequences of `length` =
    s * s grey levels. The official train/test split of Fashion-MNIST is kept."""
    side = math.isqrt(int(length))
    if side * side != length or side < 2:
        raise ParameterError("length", length, "a square s*s (784 = 28*28, 1024 = 32*32, ...)")
    if resize not in RESIZE_MODES:
        raise ParameterError("resize", resize, ", ".join(RESIZE_MODES))
    images, labels = fashion_mnist_arrays(split)
    index = subset_index(len(labels), n, seed)
    ids = to_side(images[index], side, resize).reshape(len(index), side * side)
    mask = torch.ones_like(ids, dtype=torch.bool)
    return TokenDataset(ids, mask, torch.from_numpy(labels[index].astype(np.int64)), 256,
                        len(CLASSES), "image")
