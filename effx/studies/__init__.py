"""The registry of studies: every module (or package) in this folder whose name does not start
with an underscore is a study and must define ``STUDY`` (an ``effx.study.Study``).

Adding a study = one module here, one notebook ``notebooks/<name>.ipynb`` and one profile file
``notebooks/profiles/<name>.toml``. The pipeline, the book's table of contents, the
reproducibility page and the GPU session all read this registry; nothing else lists studies.
"""
from __future__ import annotations

import functools
import importlib
import pkgutil

from effx.errors import ParameterError
from effx.study import PARTS, Study


@functools.cache
def registry() -> dict[str, Study]:
    """name -> Study, in book order (part, then position)."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        study = getattr(module, "STUDY", None)
        if not isinstance(study, Study):
            raise TypeError(f"effx.studies.{info.name} defines no STUDY record (effx.study.Study); "
                            "helper modules of a study start with an underscore")
        if study.name != info.name:
            raise TypeError(f"effx.studies.{info.name}: STUDY.name is {study.name!r}")
        found.append(study)
    found.sort(key=lambda s: (PARTS.index(s.part), s.position, s.name))
    return {s.name: s for s in found}


def get_study(name: str) -> Study:
    """The study called ``name``; ParameterError listing the studies otherwise."""
    studies = registry()
    if name not in studies:
        raise ParameterError("study", name, ", ".join(studies))
    return studies[name]
