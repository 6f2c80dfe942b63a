"""Studies: one module per notebook, holding its parameter schema and its analysis code.

``STUDIES`` maps a notebook name (notebooks/<name>.ipynb) to its module; each module defines
``PARAMETERS: dict[str, effx.params.Param]``. Adding a study = adding a module and a line here.
"""
from __future__ import annotations

import importlib

_MODULES = {
    "attention_scaling": "effx.studies.attention_scaling",
    "tipping_points": "effx.studies.tipping_points",
    "cost_breakdown": "effx.studies.cost_breakdown",
    "reproducibility": "effx.studies.reproducibility",
    "transkimmer_glue": "effx.studies.transkimmer_glue",
}


class _Registry(dict):
    """Imports a study module the first time it is looked up (keeps `import effx` light)."""

    def __missing__(self, name):
        if name not in _MODULES:
            raise KeyError(name)
        module = importlib.import_module(_MODULES[name])
        self[name] = module
        return module

    def __contains__(self, name):
        return name in _MODULES

    def __iter__(self):
        return iter(_MODULES)

    def __len__(self):
        return len(_MODULES)

    def keys(self):
        return _MODULES.keys()


STUDIES = _Registry()
