"""Tipping-point estimator on synthetic cost curves with known crossings."""
import math

import numpy as np
import pandas as pd
import pytest

from effx.errors import ParameterError
from effx.results import ResultStore, metric
from effx.studies.tipping import TippingPoint, bootstrap_tipping, crossing_length, tipping_table

GRID = np.array([64, 128, 256, 512, 1024, 2048, 4096, 8192], dtype=float)


def power_laws(l_star, p_base=2.0, p_eff=1.0, a_eff=1e-3):
    """Baseline a_b*L^2 and efficient a_e*L that meet exactly at L* (a straight line in log-log)."""
    a_base = a_eff * l_star ** (p_eff - p_base)
    return (lambda L: a_base * np.asarray(L, float) ** p_base,
            lambda L: a_eff * np.asarray(L, float) ** p_eff)


@pytest.mark.parametrize("l_star", [100.0, 1843.0, 3000.0, 7777.0])
def test_power_laws_cross_at_known_length(l_star):
    base, eff = power_laws(l_star)
    tp = crossing_length(GRID, base(GRID), eff(GRID))
    assert tp.status == "crossing"
    assert tp.length == pytest.approx(l_star, rel=1e-2)
    assert (tp.min_length, tp.max_length) == (64, 8192)


def test_crossing_with_constant_overheads_within_one_percent():
    # not a pure power law: a fixed cost plus a quadratic vs a larger fixed cost plus a linear term
    base = lambda L: 1.0 + 1e-6 * L ** 2                                       # noqa: E731
    eff = lambda L: 2.0 + 1e-3 * L                                             # noqa: E731
    exact = (1e-3 + math.sqrt(1e-6 + 4e-6)) / 2e-6       # root of 1e-6 L^2 - 1e-3 L - 1 = 0
    grid = np.geomspace(64, 8192, 57)                    # fine grid: 8 points per octave
    tp = crossing_length(grid, base(grid), eff(grid))
    assert tp.length == pytest.approx(exact, rel=1e-2)


def test_order_of_inputs_does_not_matter():
    base, eff = power_laws(1000.0)
    perm = np.random.default_rng(1).permutation(GRID.size)
    assert crossing_length(GRID[perm], base(GRID)[perm], eff(GRID)[perm]).length == \
        pytest.approx(crossing_length(GRID, base(GRID), eff(GRID)).length)


def test_cheaper_everywhere_reports_smallest_length():
    tp = crossing_length([128, 256, 512], [2.0, 4.0, 8.0], [1.0, 1.5, 2.0])
    assert tp == TippingPoint(length=128.0, status="cheaper_everywhere", min_length=128.0,
                              max_length=512.0)
    assert tp.label() == "<= 128 tokens"


def test_never_crossing():
    tp = crossing_length([128, 1024, 4096], [1.0, 2.0, 3.0], [2.0, 3.0, 3.5])
    assert tp.status == "no_crossing" and tp.length is None and tp.max_length == 4096
    assert tp.label() == "no crossing up to 4,096"


def test_labels():
    assert TippingPoint(1843.4, "crossing", 128.0, 4096.0).label() == "1,843 tokens"
    assert TippingPoint(2.5, "crossing", 1.0, 30.0).label("s") == "2.5 s"
    assert TippingPoint(None, "no_data", None, None).label() == "no data"


def test_equal_cost_counts_as_cheaper():
    tp = crossing_length([100, 200, 400], [1.0, 2.0, 4.0], [2.0, 2.0, 3.0])
    assert tp.status == "crossing" and tp.length == pytest.approx(200.0)


def test_repeated_crossings_use_the_last_lasting_one():
    # cheaper at 256 (noise), dearer again at 512, cheaper from 1024 on
    L = [128, 256, 512, 1024, 2048]
    base = [1.0, 1.0, 1.0, 1.0, 1.0]
    eff = [1.2, 0.9, 1.1, 0.8, 0.5]
    tp = crossing_length(L, base, eff)
    assert tp.status == "crossing" and 512 < tp.length < 1024
    # linear in log L between 512 (log 1.1) and 1024 (log 0.8)
    t = math.log(1.1) / (math.log(1.1) - math.log(0.8))
    assert tp.length == pytest.approx(512 * 2 ** t)
    # cheaper somewhere but not at the largest length: no lasting crossing
    assert crossing_length(L, base, [1.2, 0.9, 0.8, 0.9, 1.1]).status == "no_crossing"


def test_missing_points_are_dropped_for_both_models():
    base, eff = power_laws(1500.0)
    b, e = base(GRID), eff(GRID)
    b[-2:] = np.nan                     # baseline OOM at the two longest lengths
    e[0] = np.inf
    tp = crossing_length(GRID, b, e)
    assert tp.length == pytest.approx(1500.0, rel=1e-2)
    assert (tp.min_length, tp.max_length) == (128, 2048)
    tp = crossing_length([1, 2], [np.nan, 1.0], [1.0, np.nan])
    assert tp.status == "no_data" and tp.length is None and tp.label() == "no data"


def test_bad_inputs_raise_parameter_errors():
    with pytest.raises(ParameterError, match="lengths"):
        crossing_length([1, 1, 2], [1, 1, 1], [1, 1, 1])
    with pytest.raises(ParameterError, match="cost_baseline"):
        crossing_length([1, 2, 3], [1, 1], [1, 1, 1])
    with pytest.raises(ParameterError, match="n_boot"):
        bootstrap_tipping([1], [[1]], [[1]], n_boot=0)


def noisy_samples(l_star, reps=15, sigma=0.05, seed=0):
    base, eff = power_laws(l_star)
    rng = np.random.default_rng(seed)
    sb = [base(L) * np.exp(rng.normal(0, sigma, reps)) for L in GRID]
    se = [eff(L) * np.exp(rng.normal(0, sigma, reps)) for L in GRID]
    return sb, se


def test_bootstrap_interval_contains_true_crossing_and_is_deterministic():
    sb, se = noisy_samples(1843.0)
    res = bootstrap_tipping(GRID, sb, se, n_boot=500, seed=3)
    assert res["status"] == "crossing"
    assert res["ci_low"] <= 1843.0 <= res["ci_high"]
    assert res["ci_low"] < res["length"] < res["ci_high"]
    assert res["frac_crossing"] == 1.0 and res["n_samples"] == 15
    assert bootstrap_tipping(GRID, sb, se, n_boot=500, seed=3) == res
    assert bootstrap_tipping(GRID, sb, se, n_boot=500, seed=4)["ci_low"] != res["ci_low"]


def test_bootstrap_coverage_over_many_noisy_experiments():
    hits = 0
    for seed in range(20):
        sb, se = noisy_samples(700.0, reps=9, sigma=0.1, seed=100 + seed)
        res = bootstrap_tipping(GRID, sb, se, n_boot=300, seed=seed)
        hits += res["ci_low"] <= 700.0 <= res["ci_high"]
    assert hits >= 16          # nominal 95 %; the percentile bootstrap on 9 repeats is a bit narrow


def test_bootstrap_fractions_near_the_edge():
    # true crossing at the smallest length: resamples split between crossing and everywhere
    sb, se = noisy_samples(64.0, reps=7, sigma=0.2)
    res = bootstrap_tipping(GRID, sb, se, n_boot=400)
    total = res["frac_crossing"] + res["frac_cheaper_everywhere"] + res["frac_no_crossing"]
    assert total == pytest.approx(1.0)
    assert res["frac_cheaper_everywhere"] > 0


def test_bootstrap_handles_missing_lengths_and_other_statistics():
    sb, se = noisy_samples(1000.0)
    sb[-1] = []                          # baseline OOM at the longest length
    se[0] = None
    res = bootstrap_tipping(GRID, sb, se, n_boot=200, stat=np.mean)
    assert res["estimate"].max_length == 4096 and res["estimate"].min_length == 128
    assert res["ci_low"] <= 1000.0 <= res["ci_high"]
    trimmed = bootstrap_tipping(GRID, sb, se, n_boot=50, stat=lambda x: float(np.min(x)))
    assert trimmed["status"] == "crossing"


# -- table over a results store -----------------------------------------------------------------

def _fill_store(tmp_path, l_star=1000.0, oom_from=4096):
    store = ResultStore("tipping_test", "unit", root=tmp_path)
    store.start_run({"purpose": "test"})
    base, eff = power_laws(l_star)
    rng = np.random.default_rng(0)
    for model, cost in (("bert", base), ("bigbird", eff)):
        for L in GRID.astype(int):
            point = dict(modality="text", model=model, length=int(L), device="cpu",
                         dtype="float32", mode="inference", batch=1)
            if model == "bert" and L >= oom_from:
                store.record(point, status="oom")
                continue
            lat = cost(L) * np.exp(rng.normal(0, 0.03, 5))
            store.record(point, {"latency_ms": metric(np.median(lat), "ms", lat),
                                 "throughput_seq_per_s": metric(np.median(1 / lat), "1/s", 1 / lat)})
    return store


def test_tipping_table_from_store_and_throughput_inversion(tmp_path):
    store = _fill_store(tmp_path)
    table = tipping_table(store, {"bigbird": "bert"}, n_boot=200)
    assert len(table) == 2
    assert list(table.columns[:8]) == ["modality", "model", "baseline", "metric", "mode",
                                       "device", "dtype", "batch"]
    for _, row in table.iterrows():
        assert row["status"] == "crossing"
        assert row["tipping_length"] == pytest.approx(1000.0, rel=0.05)
        assert row["ci_low"] <= row["tipping_length"] <= row["ci_high"]
        assert row["max_length"] == 2048 and row["n_lengths"] == 6 and row["n_samples"] == 5
        assert row["label"].endswith("tokens")
    assert table.set_index("metric").loc["throughput_seq_per_s", "inverted"]
    # without the inversion, throughput (higher = better) would say "never cheaper"
    raw = tipping_table(store, {"bigbird": "bert"}, n_boot=50, higher_is_better=())
    assert raw.set_index("metric").loc["throughput_seq_per_s", "status"] == "no_crossing"


def test_tipping_table_from_dataframe_and_samples_dict(tmp_path):
    store = _fill_store(tmp_path)
    from_store = tipping_table(store, {"bigbird": "bert"}, n_boot=100)
    from_df = tipping_table(store.table(), {"bigbird": "bert"}, samples=store.samples(),
                            n_boot=100)
    pd.testing.assert_frame_equal(from_store.drop(columns="lengths"),
                                  from_df[from_store.columns].drop(columns="lengths"))
    no_samples = tipping_table(store.table(), {"bigbird": "bert"})
    assert no_samples["ci_low"].isna().all()
    assert no_samples["tipping_length"].tolist() == pytest.approx(
        from_store["tipping_length"].tolist(), rel=0.05)


def test_tipping_table_pairs_series_and_ignores_unknown_models(tmp_path):
    store = ResultStore("tipping_pairs", "unit", root=tmp_path)
    store.start_run({})
    base, eff = power_laws(500.0)
    for batch in (1, 8):
        for L in GRID.astype(int):
            for model, cost, extra in (("vit", base, {}), ("vit_local", eff, {"window": 64}),
                                       ("other", eff, {})):
                point = dict(model=model, length=int(L), batch=batch, **extra)
                store.record(point, {"memory_mb": metric(cost(L) * batch, "MB", [cost(L) * batch])})
    table = tipping_table(store, {"vit_local": "vit"}, n_boot=20, length_unit="patches")
    assert sorted(table["batch"]) == [1, 8] and set(table["window"]) == {64}
    assert table["tipping_length"].tolist() == pytest.approx([500.0, 500.0], rel=1e-2)
    assert table["ci_low"].isna().all()            # one repeat per point: no interval
    assert table["label"].str.endswith("patches").all()
    assert tipping_table(store, {"nothing": "vit"}).empty
