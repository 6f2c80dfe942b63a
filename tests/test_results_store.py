"""The results store: tidy rows, provenance, atomic writes, one write per unit, merging."""
import json

import pytest

from effx.results import ResultStore, metric, point_key
from effx.study import Record


@pytest.fixture
def store(tmp_path):
    s = ResultStore("demo", "unit", root=tmp_path)
    s.start_run({"lengths": [1, 2]}, device="cpu")
    return s


def put(store, point, metrics=None, status="ok", unit=None):
    return store.record_unit(unit or point_key(point), [Record(point, status, metrics or {})])


def test_rows_carry_provenance(store):
    put(store, {"model": "a", "length": 8}, {"latency_s": metric(0.5, "s", [0.4, 0.5, 0.6])})
    table = store.table()
    assert list(table.metric) == ["latency_s"]
    row = table.iloc[0]
    assert row.value == 0.5 and row.unit == "s" and row.n == 3
    assert row.q25 == pytest.approx(0.45) and row.q75 == pytest.approx(0.55)
    run = store.runs()[row.run_id]
    for field in ("commit", "date", "versions", "hardware", "params"):
        assert field in run
    assert run["params"] == {"lengths": [1, 2]}
    assert run["versions"]["torch"] and run["hardware"]["cpu_model"]


def test_record_requires_a_run(tmp_path):
    with pytest.raises(RuntimeError, match="start_run"):
        put(ResultStore("demo", "unit", root=tmp_path), {"x": 1})


def test_an_earlier_process_writes_are_read_back_by_unit(store, tmp_path):
    put(store, {"model": "a", "length": 8}, {"m": metric(1, "s")}, unit="u8")
    put(store, {"model": "a", "length": 16}, status="oom", unit="u16")
    again = ResultStore("demo", "unit", root=tmp_path)                   # a new process
    by_unit = again.records_by_unit()
    assert sorted(by_unit) == ["u16", "u8"] and by_unit["u16"][0]["status"] == "oom"


def test_a_unit_written_again_replaces_all_its_earlier_records(store):
    store.record_unit("u", [Record({"p": 1}, "failed"), Record({"p": 2}, "failed")])
    store.record_unit("u", [Record({"p": 1}, metrics={"m": metric(2.0, "s")})])
    assert [r["point"] for r in store.records()] == [{"p": 1}]
    assert list(store.table().value) == [2.0]


def test_torn_temp_files_never_replace_the_store(store):
    put(store, {"p": 1}, {"m": metric(1.0, "s")})
    (store.folder / "demo.jsonl.partial.tmp").write_text('{"broken')    # a crash mid-write
    lines = store.path.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["point"] == {"p": 1}
    assert len(store.records()) == 1


def test_nan_is_stored_as_null(store):
    put(store, {"p": 1}, {"m": metric(float("nan"), "s")})
    assert json.loads(store.path.read_text())["metrics"]["m"]["value"] is None


def test_point_key_is_canonical():
    assert point_key({"a": 1, "b": 2}) == point_key({"b": 2, "a": 1})
    assert point_key({"a": 1}) != point_key({"a": 2})


def test_only_filters_points(store):
    put(store, {"p": 1}, {"m": metric(1.0, "s")})
    put(store, {"p": 2}, {"m": metric(2.0, "s")})
    assert list(store.table(only=[{"p": 2}]).value) == [2.0]


def test_merging_folders_from_two_machines_keeps_every_unit_once_and_reports_conflicts(tmp_path):
    from effx.results import merge_folders, read_jsonl
    from effx.study import Record

    def machine(name, units, value):
        store = ResultStore("s", "gpu", root=tmp_path / name)
        store.start_run({}, "cpu")
        for u in units:
            store.record_unit(u, [Record(point={"u": u}, metrics={"x": metric(value, "s")})])
        return store.folder
    a = machine("a", ["u1", "u2"], 1.0)
    b = machine("b", ["u2", "u3"], 2.0)                       # u2 measured on both machines
    report = merge_folders([a, b], tmp_path / "merged")
    recs = read_jsonl(tmp_path / "merged" / "s.jsonl")
    assert sorted(r["unit"] for r in recs) == ["u1", "u2", "u3"]
    assert [r["metrics"]["x"]["value"] for r in recs if r["unit"] == "u2"] == [2.0]   # latest run
    assert len(report["conflicts"]) == 1 and report["runs"] == 2
    assert len(read_jsonl(tmp_path / "merged" / "runs.jsonl")) == 2


def test_a_store_sees_only_its_own_study_runs_and_the_latest_params(tmp_path):
    # every study of a profile shares runs.jsonl: a reference section must not pick another's run
    other = ResultStore("other", "unit", root=tmp_path)
    other.start_run({"batch_size": 32})
    put(other, {"x": 1})
    mine = ResultStore("demo", "unit", root=tmp_path)
    mine.start_run({"lengths": [1]})
    put(mine, {"x": 1})
    mine.start_run({"lengths": [2]})
    put(mine, {"x": 2})
    mine.start_run({"lengths": [3]})                 # a run that wrote nothing
    assert {r["study"] for r in mine.runs().values()} == {"demo"}
    assert mine.latest_params() == {"lengths": [2]}
    with pytest.raises(LookupError, match="no run of 'empty'"):
        ResultStore("empty", "unit", root=tmp_path).latest_params()


def test_only_code_changes_mark_the_commit_dirty(tmp_path, monkeypatch):
    import subprocess

    from effx import provenance

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path,
                       check=True, capture_output=True)
    (tmp_path / "data" / "results").mkdir(parents=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "data" / "results" / "runs.jsonl").write_text("{}\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "init")
    monkeypatch.setattr(provenance, "REPO_ROOT", tmp_path)
    commit = provenance.git_commit.__wrapped__
    assert not commit().endswith("+dirty")
    (tmp_path / "data" / "results" / "runs.jsonl").write_text("{}\n{}\n")    # a run appended
    assert not commit().endswith("+dirty")
    (tmp_path / "code.py").write_text("x = 2\n")
    assert commit().endswith("+dirty")
