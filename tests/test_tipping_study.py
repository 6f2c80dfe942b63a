"""The tipping-point study's units: measured throughput, the time budget that limits time only,
and what really ran, on tiny real models."""
import io


from effx.results import ResultStore
from effx.runner import run_study
from effx.studies import get_study
from effx.studies.tipping_points import analysis as A

STUDY = get_study("tipping_points")
TINY = dict(modalities=["text"], models={"text": ["bert", "bigbird"]}, lengths={"text": [16, 64]},
            size="tiny", repeats=5, threads=1, n_boot=100)


def run(tmp_path, **values):
    P = STUDY.validate(dict(TINY, profile="t", **values))
    store = ResultStore(STUDY.name, "t", root=tmp_path)
    run_study(STUDY, P, backend="inline", store=store, stream=io.StringIO())
    return P, store


def test_throughput_is_measured_and_differs_from_one_over_latency_where_batching_helps(tmp_path):
    P, store = run(tmp_path, throughput_batches=[32], budget_s=10.0)
    rec = next(r for r in store.records() if r["point"]["model"] == "bert"
               and r["point"]["length"] == 16)
    latency = rec["metrics"]["latency_s"]["value"]
    throughput = rec["metrics"]["throughput_samples_per_s"]["value"]
    assert rec["info"]["throughput_batch"] == 32
    assert throughput > 2.0 / latency          # a tiny model at 16 tokens: batching pays


def test_the_time_budget_stops_timing_only_and_says_so(tmp_path):
    P, store = run(tmp_path, budget_s=1e-6)
    for rec in store.records():
        assert rec["status"] == "ok" and "latency_s" not in rec["metrics"]
        assert {"peak_memory_bytes", "flops"} <= set(rec["metrics"])
        assert rec["info"]["stopped_by_budget_s"] == 1e-6
    tip = A.tipping(store, P)
    lat = tip[tip.metric == "latency_s"]
    assert len(lat) and lat.label.str.contains("stopped by the time budget").all() or \
        (lat.status == "no_data").all()
    assert not (tip[tip.metric == "flops"].status == "no_data").any()


def test_bigbirds_switch_to_full_attention_is_observed_from_the_module_that_ran(tmp_path):
    P, store = run(tmp_path, metrics=["flops"])
    ran = A.what_ran(store, P)
    row = ran[(ran.model == "bigbird") & (ran.length == 16)].iloc[0]
    assert row["observed"] == "original_full"
