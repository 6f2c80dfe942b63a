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


def parameter_table(study, P: dict):
    """The parameters of this run as one small table (value, and whether it is the default)."""
    import pandas as pd
    defaults = study.defaults()
    rows = [{"parameter": name, "value": _short(value),
             "default": "yes" if name in defaults and defaults[name] == value else
             "" if name in study.schema else "no longer a parameter"}
            for name, value in P.items()]
    return pd.DataFrame(rows).set_index("parameter")


def _short(value, width: int = 90) -> str:
    text = str(value)
    return text if len(text) <= width else text[:width - 3] + "..."


#: committed profiles every chapter shows beside the build's own run (whatever its profile)
REFERENCE_PROFILES = ("full", "gpu")


def committed_store(study: str, profile: str, current_profile: str):
    """The store of a committed profile (``gpu``, ``full``) when it exists and is not the one this
    build measures; else None."""
    from effx.results import ResultStore
    store = ResultStore(study, profile)
    return store if store.exists() and profile != current_profile else None


def styled(table, formats: dict | None = None, caption: str | None = None):
    """A DataFrame shown whole, formatted (no '...' truncation, no NaN: an empty cell)."""
    style = table.style.format(formats or {}, na_rep="")
    if caption:
        style = style.set_caption(caption)
    return style.hide(axis="index") if table.index.name is None else style


def statuses_markdown() -> str:
    """The statuses a table of the book can show, from the one place each is defined."""
    from effx.analysis.tipping import QUALIFIERS, STATUSES as TIPPING
    from effx.study import STATUSES as RECORDS
    lines = ["| status of a measurement | meaning |", "|---|---|"]
    lines += [f"| `{k}` | {v} |" for k, v in RECORDS.items()]
    lines += ["", "| status of a tipping point | meaning |", "|---|---|"]
    lines += [f"| `{k}` | {v} |" for k, v in TIPPING.items()]
    lines += [f"| (qualifier) `{k}` | {v} |" for k, v in QUALIFIERS.items()]
    return "\n".join(lines) + "\n"
