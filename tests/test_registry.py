"""The study contract holds the project together: every study declared once, in one registry
that the pipeline, the table of contents, the profiles, the notebooks and the GPU session all
follow; and the package's layers only point down."""
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from effx.pipeline import NOTEBOOKS_DIR, PROFILES_DIR, TOC_PATH, toc_text
from effx.studies import registry
from effx.study import Study

REPO = Path(__file__).resolve().parents[1]
STUDIES = registry()


def test_the_registry_holds_every_study_module_once_in_book_order():
    names = sorted(p.stem for p in (REPO / "effx" / "studies").iterdir()
                   if not p.name.startswith("_") and (p.suffix == ".py" or p.is_dir())
                   and p.name != "__pycache__")
    assert sorted(STUDIES) == names
    assert all(isinstance(s, Study) for s in STUDIES.values())


@pytest.mark.parametrize("name", list(STUDIES))
def test_each_study_has_its_notebook_and_a_profile_file_with_valid_tables(name):
    study = STUDIES[name]
    assert (NOTEBOOKS_DIR / f"{name}.ipynb").exists()
    tables = tomllib.loads((PROFILES_DIR / f"{name}.toml").read_text())
    assert {"tiny", "quick", "gpu"} <= set(tables)
    defaults = study.defaults()
    import torch
    for profile, values in tables.items():
        checked = dict(values, profile=profile)
        if checked.get("device") == "cuda" and not torch.cuda.is_available():
            checked["device"] = "cpu"                        # a GPU table, checked on a CPU
        study.validate(checked)                               # every table valid
        repeated = [k for k, v in values.items() if k in defaults and defaults[k] == v]
        assert not repeated, f"{name}.toml [{profile}] repeats defaults: {repeated}"


@pytest.mark.parametrize("name", list(STUDIES))
def test_each_notebooks_parameters_cell_holds_the_study_defaults(name):
    cells = json.loads((NOTEBOOKS_DIR / f"{name}.ipynb").read_text())["cells"]
    tagged = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1
    namespace = {}
    exec("".join(tagged[0]["source"]), namespace)
    namespace.pop("__builtins__")
    assert namespace.pop("runner") == "process"
    assert namespace == STUDIES[name].defaults()
    assert not any(c.get("outputs") for c in cells if c["cell_type"] == "code")


def test_the_table_of_contents_is_the_registrys():
    assert TOC_PATH.read_text() == toc_text(), "run `python -m effx.pipeline toc`"


def test_the_gpu_session_runs_the_registry_not_a_list_of_its_own():
    script = (REPO / "scripts" / "gpu_session.sh").read_text()
    assert "effx.pipeline measure --profile gpu" in script
    for name in STUDIES:
        assert name not in script, f"scripts/gpu_session.sh names the study {name!r}"


def test_layers_only_point_down():
    exe = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(exe)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_modules_stay_small():
    long = {str(p.relative_to(REPO)): n for p in (REPO / "effx").rglob("*.py")
            if "kernels" not in p.parts and (n := len(p.read_text().splitlines())) > 330}
    assert not long, f"modules over ~300 lines: {long}"


@pytest.mark.parametrize("name", sorted(registry()))
def test_no_cell_shows_what_glue_returns(name):
    """``glue_numbers`` glues its values and returns them: as a cell's last expression that dict
    would be printed into the page (it was, in two chapters), unless the cell's output is
    removed."""
    nb = json.loads((NOTEBOOKS_DIR / f"{name}.ipynb").read_text())
    shown = [src for c in nb["cells"] if c["cell_type"] == "code"
             and "remove-output" not in c["metadata"].get("tags", [])
             and (src := "".join(c["source"]).rstrip()).split("\n")[-1].startswith("glue_numbers(")]
    assert not shown, shown
