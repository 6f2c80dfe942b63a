"""The pipeline records every notebook's outcome: a dead kernel is a failure with its cause, the
next notebooks still run, and the exit status says that one failed."""
import json

from effx.pipeline import main, run_notebook
from effx.results import ResultStore, read_jsonl
from effx.study import Record
from effx.studies import get_study


def _notebook(path, code):
    cells = [{"cell_type": "code", "id": "p", "metadata": {"tags": ["parameters"]}, "source": 'profile = "x"\nrunner = "process"',
              "outputs": [], "execution_count": None},
             {"cell_type": "code", "id": "c", "metadata": {}, "source": code, "outputs": [], "execution_count": None}]
    path.write_text(json.dumps({"cells": cells, "metadata": {"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5}))
    return path


def test_a_killed_kernel_is_recorded_as_a_failure_with_its_cause(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFX_RESULTS_DIR", str(tmp_path / "results"))
    nb = _notebook(tmp_path / "dies.ipynb", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    seconds, status = run_notebook(get_study("reproducibility"), "tiny", {}, tmp_path / "out",
                                   notebook=nb)
    assert status == "failed"
    rec = read_jsonl(tmp_path / "results" / "tiny" / "execution.jsonl")[-1]
    assert rec["status"] == "failed" and rec["notebook"] == "reproducibility"
    assert "DeadKernelError" in rec["error"] or "died" in rec["error"].lower(), rec["error"]


def test_a_cell_error_is_recorded_with_the_exception(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFX_RESULTS_DIR", str(tmp_path / "results"))
    nb = _notebook(tmp_path / "raises.ipynb", "raise ValueError('on purpose')")
    _, status = run_notebook(get_study("reproducibility"), "tiny", {}, tmp_path / "out", notebook=nb)
    rec = read_jsonl(tmp_path / "results" / "tiny" / "execution.jsonl")[-1]
    assert status == "failed" and rec["error"] == "ValueError: on purpose"


def test_bad_parameters_stop_before_any_kernel_with_one_message(capsys):
    code = main(["run", "--profile", "tiny", "--only", "tipping_points", "-p", "lengths",
                 "{'text': [0]}"])
    err = capsys.readouterr().err
    assert code == 2 and "parameter 'lengths['text']'" in err and "allowed" in err


def test_plan_counts_units_and_those_not_yet_recorded(capsys, tmp_path, monkeypatch):
    assert main(["plan", "--profile", "tiny", "--only", "tipping_points"]) == 0
    assert "tipping_points" in capsys.readouterr().out
    from effx import pipeline
    monkeypatch.setenv("EFFX_RESULTS_DIR", str(tmp_path))
    [row] = pipeline.plan(["spion"], "tiny", overrides={"seeds": [1, 2]})
    assert row["left"] == row["units"] > 1                    # nothing recorded in a new folder
    [fewer] = pipeline.plan(["spion"], "tiny", overrides={"seeds": [1]})
    assert fewer["units"] < row["units"]                      # -p overrides are planned too
    spion = get_study("spion")
    P = spion.validate(dict(pipeline.parameters(spion, "tiny", {"seeds": [1]}), profile="tiny"))
    store = ResultStore("spion", "tiny")
    store.start_run(P)
    store.record_unit(spion.units(P)[0].id, [Record(spion.units(P)[0].key, "ok", {}, {})])
    [after] = pipeline.plan(["spion"], "tiny", overrides={"seeds": [1]})
    assert after["left"] == fewer["left"] - 1 and after["cost"] < fewer["cost"]
