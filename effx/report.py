"""Putting numbers into the book: myst-nb `glue` with plain Python types.

Prose cites these keys with ``{glue:text}`key:.2f``` (or ``path/to/notebook.ipynb::key`` from
another page), so no number in the book is typed by hand.
"""
from __future__ import annotations

import math
import numbers


def plain(value):
    """numpy / torch scalars to Python int/float/str (glue formats their text/plain repr)."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value


def glue_numbers(prefix: str, values: dict) -> dict:
    """Glue every value as `<prefix>_<key>` (not displayed); returns the plain values."""
    from myst_nb import glue
    out = {}
    for key, value in values.items():
        value = plain(value)
        if isinstance(value, float) and not math.isfinite(value):
            value = "n/a"
        glue(f"{prefix}_{key}", value, display=False)
        out[key] = value
    return out
