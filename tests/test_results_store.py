"""The results store: tidy rows, provenance, atomic writes, resume."""
import json

import pytest

from effx.results import ResultStore, metric, point_key


@pytest.fixture
def store(tmp_path):
    s = ResultStore("demo", "unit", root=tmp_path)
    s.start_run({"lengths": [1, 2]}, device="cpu")
    return s


def test_rows_carry_provenance(store):
    store.record({"model": "a", "length": 8}, {"latency_s": metric(0.5, "s", [0.4, 0.5, 0.6])})
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
        ResultStore("demo", "unit", root=tmp_path).record({"x": 1})


def test_resume_sees_points_of_an_earlier_process(store, tmp_path):
    store.record({"model": "a", "length": 8}, {"m": metric(1, "s")})
    store.record({"model": "a", "length": 16}, status="oom")
    store.record({"model": "a", "length": 32}, status="error")          # not final: redone
    again = ResultStore("demo", "unit", root=tmp_path)                   # a new process
    assert again.is_done({"length": 8, "model": "a"})                    # key order does not matter
    assert again.is_done({"model": "a", "length": 16})
    assert not again.is_done({"model": "a", "length": 32})


def test_a_remeasured_point_replaces_the_old_one(store):
    store.record({"p": 1}, {"m": metric(1.0, "s")})
    store.record({"p": 1}, {"m": metric(2.0, "s")})
    assert list(store.table().value) == [2.0]


def test_torn_temp_files_never_replace_the_store(store):
    store.record({"p": 1}, {"m": metric(1.0, "s")})
    (store.folder / "demo.jsonl.partial.tmp").write_text('{"broken')    # a crash mid-write
    lines = store.path.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["point"] == {"p": 1}
    assert len(store.records()) == 1


def test_nan_is_stored_as_null(store):
    store.record({"p": 1}, {"m": metric(float("nan"), "s")})
    assert json.loads(store.path.read_text())["metrics"]["m"]["value"] is None


def test_point_key_is_canonical():
    assert point_key({"a": 1, "b": 2}) == point_key({"b": 2, "a": 1})
    assert point_key({"a": 1}) != point_key({"a": 2})


def test_only_filters_points(store):
    store.record({"p": 1}, {"m": metric(1.0, "s")})
    store.record({"p": 2}, {"m": metric(2.0, "s")})
    assert list(store.table(only=[{"p": 2}]).value) == [2.0]
