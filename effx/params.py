"""Study parameters: one schema per study, each parameter with its check, its documentation and
its default; validated by one function that fails with one clear message.

A study's schema is a dict name -> ``Param``. ``validate(schema, values)`` fills in defaults,
rejects unknown names, and checks every value; a bad value raises ``ParameterError`` naming the
parameter, the value and what is allowed. Profiles (``notebooks/profiles/<study>.toml``) and
``-p`` overrides only write the values that differ from the defaults.
"""
from __future__ import annotations

import copy
import numbers
import re
from dataclasses import dataclass
from typing import Any, Callable

from effx.errors import ParameterError


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()   # a parameter without a default must be given


@dataclass(frozen=True)
class Param:
    """One parameter: a checker that returns the normalised value or raises ParameterError."""
    check: Callable[[str, Any], Any]
    doc: str = ""
    default: Any = REQUIRED

    def with_default(self, default: Any, doc: str | None = None) -> "Param":
        """The same check with another default (and documentation)."""
        return Param(self.check, self.doc if doc is None else doc, default)


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def choice(*allowed, default=REQUIRED, doc: str = "") -> Param:
    def check(name, value):
        if value not in allowed:
            raise ParameterError(name, value, ", ".join(map(repr, allowed)))
        return value
    return Param(check, doc or f"one of {', '.join(map(repr, allowed))}", default)


def choices(*allowed, default=REQUIRED, doc: str = "", allow_empty: bool = False) -> Param:
    """A non-empty list whose items are each one of `allowed` (a single string is a list of one)."""
    def check(name, value):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or (not value and not allow_empty):
            raise ParameterError(name, value, f"a non-empty list of {', '.join(map(repr, allowed))}")
        bad = [v for v in value if v not in allowed]
        if bad:
            raise ParameterError(name, bad[0], ", ".join(map(repr, allowed)), why="unknown value")
        return list(dict.fromkeys(value))
    return Param(check, doc or f"list of: {', '.join(map(repr, allowed))}", default)


def positive_int(doc: str = "", maximum: int | None = None, default=REQUIRED,
                 allow_zero: bool = False) -> Param:
    low = 0 if allow_zero else 1

    def check(name, value):
        if not _is_int(value) or value < low or (maximum is not None and value > maximum):
            upper = f" up to {maximum}" if maximum else ""
            raise ParameterError(name, value, f"an integer >= {low}{upper}")
        return int(value)
    return Param(check, doc, default)


def positive_number(doc: str = "", default=REQUIRED, maximum: float | None = None) -> Param:
    def check(name, value):
        if not _is_real(value) or value <= 0 or (maximum is not None and value > maximum):
            upper = f" up to {maximum:g}" if maximum is not None else ""
            raise ParameterError(name, value, f"a positive number{upper}")
        return float(value)
    return Param(check, doc, default)


def _positive_list(name, value, integer: bool, maximum, allow_zero: bool = False) -> list:
    kind = ("integers" if integer else "numbers") if not allow_zero else (
        "integers >= 0" if integer else "numbers >= 0")
    kind = kind if allow_zero else f"positive {kind}"
    if not isinstance(value, (list, tuple)) or not value:
        raise ParameterError(name, value, f"a non-empty list of {kind}")
    for v in value:
        ok = _is_int(v) if integer else _is_real(v)
        if not ok or v < 0 or (v == 0 and not allow_zero):
            raise ParameterError(name, v, f"{kind} (e.g. [128, 256, 512])",
                                 why=f"in list {list(value)!r}")
        if maximum is not None and v > maximum:
            raise ParameterError(name, v, f"{kind} up to {maximum}")
    return sorted(set(int(v) if integer else v for v in value))


def positive_ints(doc: str = "", maximum: int | None = None, default=REQUIRED,
                  allow_zero: bool = False) -> Param:
    """A non-empty list of positive integers (or >= 0), returned sorted and without duplicates."""
    return Param(lambda name, value: _positive_list(name, value, True, maximum, allow_zero), doc,
                 default)


def positive_numbers(doc: str = "", default=REQUIRED, maximum: float | None = None,
                     allow_zero: bool = False) -> Param:
    """A non-empty list of positive numbers (or >= 0), returned sorted and without duplicates."""
    return Param(lambda name, value: _positive_list(name, value, False, maximum, allow_zero), doc,
                 default)


def mapping_of(item: Param, keys: tuple[str, ...], doc: str = "", default=REQUIRED,
               allow_empty: bool = False) -> Param:
    """A dict whose keys are among `keys` and whose values each pass `item`."""
    def check(name, value):
        if not isinstance(value, dict) or (not value and not allow_empty):
            raise ParameterError(name, value, f"a dict with keys among {', '.join(map(repr, keys))}")
        bad = [k for k in value if k not in keys]
        if bad:
            raise ParameterError(name, bad[0], ", ".join(map(repr, keys)), why="unknown key")
        return {k: item.check(f"{name}[{k!r}]", v) for k, v in value.items()}
    return Param(check, doc, default)


def per_key(item: Param, doc: str = "", default=REQUIRED) -> Param:
    """Either one value for everything, or a dict key -> value (e.g. epochs per GLUE task)."""
    def check(name, value):
        if isinstance(value, dict):
            return {str(k): item.check(f"{name}[{k!r}]", v) for k, v in value.items()}
        return item.check(name, value)
    return Param(check, doc, default)


def fraction(doc: str = "", default=REQUIRED) -> Param:
    """A number in [0, 1]."""
    def check(name, value):
        if not _is_real(value) or not 0 <= value <= 1:
            raise ParameterError(name, value, "a number from 0 to 1")
        return float(value)
    return Param(check, doc, default)


def text(doc: str = "", default=REQUIRED) -> Param:
    """A non-empty string (a name, a path, a hub id)."""
    def check(name, value):
        if not isinstance(value, str) or not value.strip():
            raise ParameterError(name, value, "a non-empty text")
        return value
    return Param(check, doc, default)


def flag(doc: str = "", default=REQUIRED) -> Param:
    def check(name, value):
        if not isinstance(value, bool):
            raise ParameterError(name, value, "True or False")
        return value
    return Param(check, doc, default)


def device(doc: str = "", default="cpu") -> Param:
    def check(name, value):
        from effx.device import resolve_device
        if not isinstance(value, str):
            raise ParameterError(name, value, "'cpu', 'cuda', 'auto'")
        return str(resolve_device(value, param=name))
    return Param(check, doc or "'cpu', 'cuda' (GPU required) or 'auto'", default)


def dtype(*allowed: str, default="float32", doc: str = "") -> Param:
    return choice(*(allowed or ("float32", "bfloat16", "float16")), default=default,
                  doc=doc or "tensor dtype")


def identifier(doc: str = "", default=REQUIRED) -> Param:
    def check(name, value):
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", value):
            raise ParameterError(name, value, "a name of letters, digits, '-' and '_'")
        return value
    return Param(check, doc, default)


def optional(item: Param, doc: str = "") -> Param:
    """``item`` or None (default None)."""
    return Param(lambda name, value: None if value is None else item.check(name, value),
                 doc or item.doc, None)


#: parameters every study takes: where results go and how units are run
COMMON = {
    "profile": identifier("results folder under data/results/ (set by the profile)", default="quick"),
    "memory_limit_gb": optional(positive_number(),
                                "a unit whose worker process grows beyond this resident memory is "
                                "stopped and recorded as out of memory (None: half of this "
                                "machine's memory)"),
}


def defaults(schema: dict[str, Param]) -> dict:
    """Default value of every parameter that has one (deep copies: callers may mutate them)."""
    return {n: copy.deepcopy(p.default) for n, p in schema.items() if p.default is not REQUIRED}


def validate(schema: dict[str, Param], values: dict, *, where: str = "",
             cross_check: Callable[[dict], dict] | None = None) -> dict:
    """Check ``values`` against ``schema`` (defaults filled in); return the normalised values.

    Unknown names and bad values raise ParameterError; ``where`` names the study in messages.
    """
    unknown = sorted(set(values) - set(schema))
    if unknown:
        raise ParameterError(unknown[0], values[unknown[0]], ", ".join(sorted(schema)),
                             why=f"{where or 'this study'} has no such parameter")
    merged = {**defaults(schema), **copy.deepcopy(values)}
    missing = sorted(set(schema) - set(merged))
    if missing:
        raise ParameterError(missing[0], None, schema[missing[0]].doc or "a value",
                             why="required: it has no default")
    out = {name: schema[name].check(name, merged[name]) for name in schema}
    return cross_check(out) if cross_check else out


def non_default(schema: dict[str, Param], values: dict) -> dict:
    """The values that differ from their defaults, both as checked (sorted lists...): what a
    profile table should write, what a recorded run changed (a name the schema no longer has,
    renamed or removed since the run, is kept: its value cannot be compared)."""
    base = {k: schema[k].check(k, v) for k, v in defaults(schema).items()}
    return {k: v for k, v in values.items() if k not in base or base[k] != v}
