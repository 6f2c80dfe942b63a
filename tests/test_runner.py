"""The runner: resume, out-of-memory isolation, failures recorded, progress and provenance."""
import io

import pytest

import runner_toy
from effx.results import ResultStore
from effx.runner import run_study, unit_done
from effx.runner.progress import Progress, eta, eta_in

STUDY = runner_toy.STUDY


def run(tmp_path, backend="process", stream=None, **values):
    P = STUDY.validate(dict(values, profile="t"))
    store = ResultStore(STUDY.name, "t", root=tmp_path)
    return run_study(STUDY, P, backend=backend, store=store, stream=stream or io.StringIO()), store


def test_a_unit_beyond_the_memory_limit_is_recorded_as_oom_and_the_sweep_goes_on(tmp_path):
    summary, store = run(tmp_path, grow_mb=1500, hold_s=5.0, memory_limit_gb=0.5)
    by = {(r["point"]["series"], r["point"].get("i"), r["point"].get("part")): r for r in store.records()}
    oom = by[("grow", 1, None)]
    assert oom["status"] == "oom"
    assert oom["info"]["limit_bytes"] == 0.5 * 2**30 and oom["info"]["rss_at_kill_bytes"] > 0.5 * 2**30
    assert by[("grow", 2, None)]["status"] == "skipped_after_oom"          # same series, later
    assert by[("grow", 0, 0)]["status"] == "ok" and by[("fine", None, 1)]["status"] == "ok"
    assert summary.oom == 1 and summary.skipped == 1


def test_failures_are_recorded_with_their_cause_and_retried_next_time(tmp_path):
    summary, store = run(tmp_path)
    broken = [r for r in store.records() if r["point"]["series"] == "broken"]
    assert [r["status"] for r in broken] == ["failed"]
    assert "ValueError: this unit is broken on purpose" in broken[0]["info"]["error"]
    assert "Traceback" in broken[0]["info"]["traceback"]
    assert summary.failed == [("broken", "ValueError: this unit is broken on purpose")]
    again, store = run(tmp_path, fail=False)              # the failed unit runs again, alone
    assert again.resumed == 4 and again.executed == 1 and not again.failed
    broken = [r for r in store.records() if r["point"]["series"] == "broken"]
    assert sorted(r["status"] for r in broken) == ["ok", "ok"]            # the failure is replaced


def test_resume_executes_nothing_already_recorded(tmp_path):
    first, store = run(tmp_path, backend="inline", fail=False)
    n = len(store.records())
    second, store = run(tmp_path, backend="inline", fail=False)
    assert first.executed == 5 and second.executed == 0 and second.resumed == 5
    assert len(store.records()) == n


def test_records_carry_provenance_and_what_ran(tmp_path):
    _, store = run(tmp_path, fail=False)
    rec = store.records()[0]
    run_ = store.runs()[rec["run_id"]]
    assert {"commit", "versions", "hardware", "params", "date"} <= set(run_)
    assert {"host", "load_1min", "torch_threads"} <= set(run_["hardware"])
    assert {"host", "pid", "load_before", "load_after", "seconds"} <= set(rec["info"])


def test_progress_lines_say_what_runs_how_much_is_left_and_when_it_ends(tmp_path):
    out = io.StringIO()
    run(tmp_path, stream=out, fail=False)
    text = out.getvalue()
    assert "[runner_toy] 5/5 units done" in text
    progress = Progress("s", [1.0, 1.0, 2.0], stream=io.StringIO(), every_s=0)
    progress.start("first")
    progress.finish(1.0)
    assert "1/3 units done" in progress.line() and "ETA" in progress.line()


def test_the_eta_falls_while_a_unit_runs_and_never_counts_a_running_unit_twice():
    clock = [0.0]
    progress = Progress("s", [10.0, 10.0, 10.0], stream=io.StringIO(), every_s=0,
                        clock=lambda: clock[0])
    progress.start("a", 10.0)
    assert progress.seconds_left() is None                  # no rate before a unit finishes
    clock[0] = 100.0
    progress.finish(10.0)                                   # 10 s per unit of cost
    assert progress.seconds_left() == 200.0
    progress.start("b", 10.0)
    clock[0] = 160.0
    assert progress.seconds_left() == 140.0                 # b: 40 s still, c: 100 s
    clock[0] = 250.0                                        # b overruns its estimate
    assert progress.seconds_left() == 100.0
    progress.finish(10.0)                                   # 2 units in 250 s: 12.5 s per cost
    assert progress.seconds_left() == 125.0 and "ETA 2m05s" in progress.line()
    skipped = Progress("s", [10.0, 10.0, 10.0], stream=io.StringIO(), every_s=0,
                       clock=lambda: clock[0])
    skipped.start("a", 10.0)
    clock[0] = 270.0
    skipped.finish(10.0, started=False)       # a unit skipped after an OOM: "a" still runs
    assert len(skipped.running) == 1 and skipped.seconds_left() == 20.0


def test_the_eta_that_training_loops_print_is_the_one_progress_reads_back():
    assert eta(30.0, 10, 100) == "ETA 4m30s" and eta_in(f"step 10/100, {eta(30.0, 10, 100)}") == 270.0
    assert eta(5.0, 0, 10) == "ETA 50s" and eta(9.0, 3, 3) == "ETA 0s"   # nothing done / all done


def test_an_overrun_with_a_rounding_residue_left_says_unknown_not_at_least_0s():
    clock = [0.0]
    progress = Progress("s", [0.1, 0.2, 0.3], stream=io.StringIO(), every_s=0,
                        clock=lambda: clock[0])
    for cost in (0.1, 0.2):
        progress.start("x", cost)
        clock[0] += 1.0
        progress.finish(cost)
    progress.start("last", 0.3)
    clock[0] += 100.0
    assert 0 < progress.seconds_left() < 1e-9           # 0.6 - 0.3 - 0.3 in floating point
    assert progress.line().endswith("ETA unknown (a unit runs past its estimate)")


def test_a_unit_that_reports_its_own_eta_is_trusted_and_an_overrun_is_said():
    clock = [0.0]
    progress = Progress("s", [300.0, 200.0], stream=io.StringIO(), every_s=0,
                        clock=lambda: clock[0])
    progress.start("baseline", 300.0)
    clock[0] = 30.0
    progress.finish(300.0)                  # loaded, not trained: far cheaper than its cost
    progress.start("transkimmer", 200.0)
    clock[0] = 60.0                         # the rate's guess (20 s) has run out
    assert progress.seconds_left() == 0.0 and progress.past_estimate()
    assert progress.line().endswith("ETA unknown (a unit runs past its estimate)")
    progress.note("transkimmer: step 46/4210 (4164 left), 0.45 s/step, ETA 31m04s, loss 0.9")
    assert progress.seconds_left() == 1864.0 and not progress.past_estimate()
    clock[0] = 64.0
    assert progress.seconds_left() == 1860.0 and progress.line().endswith("ETA 31m00s")
    progress.note("transkimmer: evaluating on 872 dev examples")   # no ETA: the last one holds
    assert progress.seconds_left() == 1860.0
    clock[0] = 64.0 + 1900.0                # its own ETA ran out (evaluation was not in it)
    assert progress.seconds_left() == 0.0 and "ETA unknown" in progress.line()
    long = "SST-2 transkimmer (fixed lambda=0.8 predictor lr 0.0003 finetuned +2 ep distill=0.5 " \
        "frozen=0.5 ep, /home/someone/encoders/bert-base-uncased, seed 1): step 9/99, ETA 3m05s"
    progress.note(long)                     # past the 160 characters shown: still read
    assert len(long) > 160 and progress.seconds_left() == 185.0
    progress.start("another", 10.0)         # two units run: neither's own ETA is trusted alone
    progress.note("another: step 1/2, ETA 45s")
    assert progress.reported is not None and progress._reported_left(clock[0]) is None
    progress.finish(200.0)                  # one ends: the other's ETA waits for its next line
    assert progress.reported is None
    first = Progress("s", [10.0], stream=io.StringIO(), every_s=0, clock=lambda: clock[0])
    first.start("only", 10.0)
    first.note("step 1/10, ETA 45s")                 # no unit finished, but it is the last one
    assert first.seconds_left() == 45.0


def test_a_larger_time_budget_measures_a_stopped_point_again():
    rec = {"status": "ok", "info": {"stopped_by_budget_s": 2.0}}
    assert unit_done([rec], {"budget_s": 2.0})
    assert not unit_done([rec], {"budget_s": 5.0})
    assert not unit_done([dict(rec, status="failed")], {"budget_s": 2.0})


class Interrupted(BaseException):
    """Stands for Ctrl-C (pytest reserves KeyboardInterrupt)."""


def test_an_interrupted_run_resumes_without_redoing_finished_units(tmp_path):
    calls, stop = [], [True]
    real = runner_toy.execute

    def execute(unit, P, ctx):
        if unit.label == "broken" and stop[0]:
            stop[0] = False
            raise Interrupted                        # the user stops the run here
        calls.append(unit.label)
        return real(unit, P, ctx)
    object.__setattr__(STUDY, "execute", execute)      # the record is frozen: patch it by force
    try:
        with pytest.raises(Interrupted):
            run(tmp_path, backend="inline", fail=False)
        assert calls == ["grow 0", "grow 1", "grow 2"]
        calls.clear()
        summary, _ = run(tmp_path, backend="inline", fail=False)
        assert calls == ["broken", "fine"] and summary.resumed == 3
    finally:
        object.__setattr__(STUDY, "execute", real)
