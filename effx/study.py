"""The study contract: what a study declares, once, for the pipeline, the runner and the book.

A study is a ``Study`` record in its module under ``effx/studies/`` (the registry collects them).
Its work is split into ``Unit``s: a profiling series at one length, a training job. The runner
(``effx.runner``) executes each unit in a worker process through ``study.execute(unit, P, ctx)``,
which returns the unit's ``Record``s; the runner writes them to the results store with provenance,
skips units already recorded, records out-of-memory kills and errors, and shows progress.

    STUDY = Study(name="tipping_points", title="Tipping points", part="Studies", position=20,
                  parameters=PARAMETERS, units=units, execute=execute, check=cross_check)

``execute`` and ``units`` must be module-level functions: the record is pickled to the worker.
"""
from __future__ import annotations

import importlib
import json
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from effx import params as p
from effx.errors import ParameterError

#: where a study's chapter sits in the book (captions of the table of contents, in order)
PARTS = ("Foundations", "Studies", "About this book")
#: what a record's status can be, and what it means (the book's methods page quotes this table);
#: the first four are final: a rerun does not redo them
STATUSES = {
    "ok": "measured (a model that was not timed says why: e.g. stopped by the time budget)",
    "oom": "out of memory: an out-of-memory error, or the worker process grew beyond the memory "
           "limit (recorded with the limit) or was killed by the system",
    "skipped_after_oom": "not run: a shorter length of the same series ran out of memory",
    "unsupported": "the model cannot take this input by construction (e.g. an image side that is "
                   "not a multiple of its patch size)",
    "failed": "an error: recorded with its cause and traceback, and retried by the next run",
}
FINAL = tuple(STATUSES)[:4]


def unit_id(key: dict) -> str:
    """Canonical text of a unit's (or a point's) key: its identity for resume."""
    return json.dumps(key, sort_keys=True, default=str)


@dataclass(frozen=True)
class Unit:
    """One piece of work the runner schedules, resumes and isolates.

    key: what defines it (every setting that changes its result; JSON-able).
    label: short human text for progress lines ("bert vs longformer, 1,024 tokens").
    series: units of one series run in order; an out-of-memory kill skips its later units.
    cost_s: rough estimate of its seconds, for the progress ETA and the GPU plan.
    gpus / cpus: resources one execution needs (the Ray backend reserves them).
    after: ids of units that must be recorded before this one starts (a Transkimmer job waits for
        its baseline's), whatever their series.
    worker: units with different tags never share a worker process (the tipping-point study's
        runs: each repetition of a sweep in a fresh process).
    """
    key: dict
    label: str
    series: str = ""
    cost_s: float = 1.0
    gpus: int = 0
    cpus: int = 1
    after: tuple[str, ...] = ()
    worker: str = ""

    @property
    def id(self) -> str:
        return unit_id(self.key)


@dataclass
class Record:
    """One result row: the point it measures, its status, metrics ({name: {value, unit,
    samples?}}) and info (what really ran, provenance details)."""
    point: dict
    status: str = "ok"
    metrics: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r}; allowed: {', '.join(STATUSES)}")


@dataclass
class Context:
    """What a unit's execution gets besides the unit and the parameters.

    earlier: records already stored for this unit's series (e.g. to stop timing a model that went
        over the time budget at a shorter length).
    log: progress text from inside the unit (training steps, ...); shown by the runner.
    checkpoint_dir: the study's checkpoint folder, shared by its units (a Transkimmer job starts
        from its baseline's checkpoint); a long unit keeps its own checkpoints there, under a name
        made from its settings, and resumes from them after a kill.
    """
    earlier: list[dict] = field(default_factory=list)
    log: Callable[[str], None] = print
    checkpoint_dir: str | None = None


@dataclass(frozen=True)
class Study:
    """A study: its chapter, its parameters, its units of work and how one unit is executed.

    name: the notebook (notebooks/<name>.ipynb), the results file and the chapter's file name.
    part / position: where the chapter sits in the book (``PARTS``; lower positions first).
    parameters: the schema with defaults (``effx.params``); ``effx.params.COMMON`` is added.
    units(P) -> [Unit]; execute(unit, P, ctx) -> [Record]; both None for a chapter that only
    reports (the reproducibility page).
    check(P) -> P: checks across parameters, after each one passed its own.
    gpu_priority: order of the studies in the GPU session (lower first; None: not run there).
    share_s: this study's share of the 20-minute CPU build (``quick`` profile), in seconds.
    """
    name: str
    title: str
    part: str
    position: int
    parameters: dict[str, p.Param]
    units: Callable[[dict], list[Unit]] | None = None
    execute: Callable[[Unit, dict, Context], list[Record]] | None = None
    check: Callable[[dict], dict] | None = None
    gpu_priority: int | None = None
    share_s: int = 60

    def __post_init__(self):
        if self.part not in PARTS:
            raise ValueError(f"study {self.name!r}: part {self.part!r}; allowed: {', '.join(PARTS)}")
        if (self.units is None) != (self.execute is None):
            raise ValueError(f"study {self.name!r}: give both units and execute, or neither")
        clash = set(self.parameters) & set(p.COMMON)
        if clash:
            raise ValueError(f"study {self.name!r}: parameters {sorted(clash)} are common to all")

    @property
    def schema(self) -> dict[str, p.Param]:
        return {**p.COMMON, **self.parameters}

    @property
    def measures(self) -> bool:
        return self.units is not None

    def validate(self, values: dict) -> dict:
        """Checked parameters (defaults filled in). ``values`` may be a notebook's ``globals()``:
        only the schema's names are read from it then."""
        if "__name__" in values:                       # a namespace: take the schema's names
            values = {k: values[k] for k in self.schema if k in values}
        return p.validate(self.schema, values, where=f"study '{self.name}'", cross_check=self.check)

    def defaults(self) -> dict:
        return p.defaults(self.schema)

    def __reduce__(self):
        """Pickled by reference (module name): the worker process imports the study's module.
        Its parameter checks are closures, which pickle cannot carry by value. Modules are read
        through their namespace: a lazy module's ``__getattr__`` (transformers') imports on
        demand, and once failed on a missing optional package (torchvision)."""
        for name, module in list(sys.modules.items()):
            if getattr(module, "__dict__", {}).get("STUDY") is self:
                return _load_study, (name,)
        raise TypeError(f"study {self.name!r} is not the STUDY of an imported module")


def _load_study(module: str) -> "Study":
    return importlib.import_module(module).STUDY


def require(condition: bool, name: str, value: Any, allowed: str, why: str | None = None) -> None:
    """Raise ParameterError(name, value, allowed) unless ``condition`` (cross-parameter checks)."""
    if not condition:
        raise ParameterError(name, value, allowed, why=why)
