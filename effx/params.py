"""Notebook parameters: validated by one function, failing with one clear message.

A notebook's ``parameters`` cell holds literals only; the next cell calls
``effx.params.validate(study, dict(...))``. Each study declares its parameters as a dict of
``Param`` objects (in ``effx/studies/<study>.py``). A bad value raises ``ParameterError`` naming
the parameter, the value, and what is allowed.
"""
from __future__ import annotations

import numbers
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from effx.errors import ParameterError


@dataclass(frozen=True)
class Param:
    """One parameter: a checker that returns the normalised value or raises ParameterError."""
    check: Callable[[str, Any], Any]
    doc: str = ""


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def choice(*allowed: str, doc: str = "") -> Param:
    def check(name, value):
        if value not in allowed:
            raise ParameterError(name, value, ", ".join(map(repr, allowed)))
        return value
    return Param(check, doc or f"one of {', '.join(allowed)}")


def choices(*allowed: str, doc: str = "") -> Param:
    """A non-empty list whose items are each one of `allowed`."""
    def check(name, value):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not value:
            raise ParameterError(name, value, f"a non-empty list of {', '.join(map(repr, allowed))}")
        bad = [v for v in value if v not in allowed]
        if bad:
            raise ParameterError(name, bad[0], ", ".join(map(repr, allowed)), why="unknown value")
        return list(value)
    return Param(check, doc or f"list of: {', '.join(allowed)}")


def positive_int(doc: str = "", maximum: int | None = None) -> Param:
    def check(name, value):
        if not _is_int(value) or value <= 0 or (maximum is not None and value > maximum):
            upper = f" up to {maximum}" if maximum else ""
            raise ParameterError(name, value, f"a positive integer{upper}")
        return int(value)
    return Param(check, doc)


def positive_ints(doc: str = "", maximum: int | None = None) -> Param:
    """A non-empty list of positive integers, returned sorted and without duplicates."""
    def check(name, value):
        if not isinstance(value, (list, tuple)) or not value:
            raise ParameterError(name, value, "a non-empty list of positive integers")
        for v in value:
            if not _is_int(v) or v <= 0:
                raise ParameterError(name, v, "positive integers (e.g. [128, 256, 512])",
                                     why=f"in list {list(value)!r}")
            if maximum is not None and v > maximum:
                raise ParameterError(name, v, f"positive integers up to {maximum}")
        return sorted(set(int(v) for v in value))
    return Param(check, doc)


def mapping_of(item: Param, keys: tuple[str, ...], doc: str = "") -> Param:
    """A dict whose keys are among `keys` and whose values each pass `item`."""
    def check(name, value):
        if not isinstance(value, dict) or not value:
            raise ParameterError(name, value, f"a dict with keys among {', '.join(map(repr, keys))}")
        bad = [k for k in value if k not in keys]
        if bad:
            raise ParameterError(name, bad[0], ", ".join(map(repr, keys)), why="unknown key")
        return {k: item.check(f"{name}[{k!r}]", v) for k, v in value.items()}
    return Param(check, doc)


def positive_numbers(doc: str = "") -> Param:
    """A non-empty list of positive numbers, returned sorted and without duplicates."""
    def check(name, value):
        if not isinstance(value, (list, tuple)) or not value:
            raise ParameterError(name, value, "a non-empty list of positive numbers")
        for v in value:
            if not isinstance(v, numbers.Real) or isinstance(v, bool) or v <= 0:
                raise ParameterError(name, v, "positive numbers", why=f"in list {list(value)!r}")
        return sorted(set(value))
    return Param(check, doc)


def positive_number(doc: str = "") -> Param:
    def check(name, value):
        if not isinstance(value, numbers.Real) or isinstance(value, bool) or value <= 0:
            raise ParameterError(name, value, "a positive number")
        return float(value)
    return Param(check, doc)


def flag(doc: str = "") -> Param:
    def check(name, value):
        if not isinstance(value, bool):
            raise ParameterError(name, value, "True or False")
        return value
    return Param(check, doc)


def existing_dir(doc: str = "") -> Param:
    def check(name, value):
        if not isinstance(value, str) or not Path(value).expanduser().is_dir():
            raise ParameterError(name, value, "a path to an existing directory",
                                 why="directory not found")
        return str(Path(value).expanduser())
    return Param(check, doc)


def device(doc: str = "") -> Param:
    def check(name, value):
        from effx.device import resolve_device
        if not isinstance(value, str):
            raise ParameterError(name, value, "'cpu', 'cuda', 'auto'")
        return str(resolve_device(value, param=name))
    return Param(check, doc or "'cpu', 'cuda' (GPU required) or 'auto'")


def dtype(*allowed: str, doc: str = "") -> Param:
    return choice(*(allowed or ("float32", "bfloat16", "float16")), doc=doc or "tensor dtype")


def identifier(doc: str = "") -> Param:
    def check(name, value):
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", value):
            raise ParameterError(name, value, "a name of letters, digits, '-' and '_'")
        return value
    return Param(check, doc)


#: parameters every study takes; papermill fills them in from the profile
COMMON = {"profile": identifier("results folder under data/results/ (set by the profile)")}


def validate(study: str, params: dict) -> dict:
    """Check every parameter of `study`; return the normalised values.

    Unknown parameter names, unknown studies and bad values all raise ParameterError.
    """
    from effx.studies import STUDIES
    if study not in STUDIES:
        raise ParameterError("study", study, ", ".join(sorted(STUDIES)))
    schema = {**COMMON, **STUDIES[study].PARAMETERS}
    unknown = sorted(set(params) - set(schema))
    if unknown:
        raise ParameterError(unknown[0], params[unknown[0]], ", ".join(sorted(schema)),
                             why=f"study '{study}' has no such parameter")
    missing = sorted(set(schema) - set(params))
    if missing:
        raise ParameterError(missing[0], None, schema[missing[0]].doc or "a value",
                             why="missing: the parameters cell must define it")
    values = {name: schema[name].check(name, params[name]) for name in schema}
    cross_check = getattr(STUDIES[study], "cross_check", None)   # checks across parameters
    return cross_check(values) if cross_check else values


def describe(study: str) -> dict[str, str]:
    """Parameter name -> documentation, for the README and `make help`."""
    from effx.studies import STUDIES
    schema = {**COMMON, **STUDIES[study].PARAMETERS}
    return {name: p.doc for name, p in schema.items()}
