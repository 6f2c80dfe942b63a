"""The GPU run beside the CPU's (effx.transkimmer.devices), on the committed records, and the
operator counts that explain it."""
import itertools

import numpy as np
import pytest

from effx.profiling import count_dispatches
from effx.results import ResultStore
from effx.transkimmer import devices as D
from effx.transkimmer.measure import PATHS, plain_forward, removal_forward
from effx.transkimmer.predictor import keeps
from effx.transkimmer.removal import skim_forward_removed
from tests.test_transkimmer_model import batch, skimming, tiny_bert


@pytest.fixture(scope="module")
def pairs():
    gpu, cpu = ResultStore("transkimmer_glue", "gpu"), ResultStore("transkimmer_glue", "full")
    if not (gpu.exists() and cpu.exists()):
        pytest.skip("the committed gpu and full runs are not here")
    return D.side_by_side(gpu.table(), cpu.table()), D.device_name(gpu.table())


def test_every_gpu_job_stands_beside_the_cpus_same_job(pairs):
    frame, device = pairs
    assert "H200" in device
    assert set(frame.method) >= {"baseline", "transkimmer", "baseline_continued"}
    assert not frame[["value_gpu", "value_cpu", "flops_speedup_cpu"]].isna().any().any()
    assert (frame.seed == 0).all() and frame.setting.is_unique


def test_wall_clock_speedups_agree_with_the_times_they_come_from(pairs):
    frame, _ = pairs
    tk = frame[frame.method == "transkimmer"]
    for side in ("gpu", "cpu"):                # median of paired ratios vs ratio of medians
        for b in ("b1", "b32"):
            ratio = tk[f"ref_ms_{b}_{side}"] / tk[f"ms_{b}_{side}"]
            np.testing.assert_allclose(tk[f"wall_{b}_{side}"], ratio, rtol=0.15)


def test_the_sentences_quote_the_frame(pairs):
    frame, device = pairs
    text = D.sentences(frame, device)
    tk = frame[frame.method == "transkimmer"]
    assert device in text and f"{tk.wall_b1_gpu.min():.2f}" in text
    assert f"{tk.delta_gpu.max():+.1f}" in text
    said = "slower, not faster" in text
    assert said == bool(tk[["wall_b1_gpu", "wall_b32_gpu"]].max().max() < 1)
    faster = frame.assign(wall_b1_gpu=2.0, wall_b32_gpu=3.0)
    assert "): faster." in D.sentences(faster, device)
    assert "no Transkimmer result" in D.sentences(frame[frame.method == "baseline"], device)


def test_removal_reads_the_device_once_per_layer_and_the_plain_encoder_once():
    """The token-removal path must not stall a GPU more than it must: one read per layer, the
    width of the next one (boolean indexing would add a wait per layer); the plain encoder one
    read per forward. Operators: removal costs more of them than it saves at these sizes, and
    writing every token's state back costs more again than the logits alone (what is timed)."""
    m = skimming(tiny_bert(layers=4))
    ids, mask, types = batch()
    plain_ops, plain_reads = count_dispatches(lambda: plain_forward(m)(ids, mask, types))
    lean_ops, lean_reads = count_dispatches(lambda: removal_forward(m)(ids, mask, types))
    assert (lean_ops, lean_reads) == count_dispatches(
        lambda: removal_forward(m, PATHS["logits"])(ids, mask, types))      # what is timed
    states_ops, states_reads = count_dispatches(
        lambda: removal_forward(m, PATHS["states"])(ids, mask, types))
    assert plain_reads == 1 and lean_reads == states_reads == 4
    assert states_ops > 1.2 * lean_ops and lean_ops > 1.2 * plain_ops > 0
    h = m.embed(ids, types)
    predictor_ops = count_dispatches(lambda: keeps(m.predictors[0](h)))[0]
    assert lean_ops - plain_ops > len(m.layers) * predictor_ops > 0   # the predictors, and more
    n = int(mask[0].sum())                                 # batch 1: one read a layer as well
    one = ids[:1, :n], mask[:1, :n], types[:1, :n]
    assert count_dispatches(lambda: removal_forward(m)(*one))[1] == 4
    unskimmed = count_dispatches(lambda: skim_forward_removed(m, ids, mask, types, skim=False))
    assert unskimmed[1] == 1
    known = count_dispatches(lambda: m(ids, mask, types, skim=False, padded=True))
    assert known[1] == 0                                  # the caller knew: no read


def test_the_removal_paths_frame_reads_the_committed_timings_and_nothing_else_does():
    from effx.transkimmer.report import jobs_frame
    rec = ResultStore("transkimmer_glue", "recovery")
    if not rec.exists():
        pytest.skip("the committed recovery run is not here")
    table = rec.table()
    frame = D.removal_paths_frame(table)
    timed = table[table.measure.eq("removal_paths") & table.metric.notna()]
    job = ["task", "seed", "skim_lambda", "distill", "frozen_epochs"]
    assert len(frame) == timed.groupby(job).ngroups > 0
    for _, g in timed.groupby(job):                                     # gain: paired rounds
        samples = g.set_index("metric").samples
        gain = np.median(np.divide(samples["paths_states_b1"], samples["paths_logits_b1"]))
        assert gain in set(frame.gain_b1)
    text = D.removal_paths_sentences(frame)
    assert f"{frame.gain_b32.min():.2f}" in text and f"{frame.logits_b1.max():.2f}" in text
    assert set(frame.device) == set(timed.info_device_name) and frame.device.iloc[0] in text
    assert not any(str(c).startswith("paths_") for c in jobs_frame(table).columns)
    assert "No removal-path timing" in D.removal_paths_sentences(frame.iloc[:0])


@pytest.mark.parametrize("group, expected", [
    (1, ["a1", "b1", "c1", "a2", "b2", "c2"] * 3),
    (3, ["a1", "b1", "c1", "a2", "b2", "c2",          # round 0 as given, then each set's three
         "b1", "c1", "a1", "b2", "c2", "a2",          # forwards rotated by the round
         "c1", "a1", "b1", "c2", "a2", "b2"])])
def test_alternation_rotates_the_forwards_compared_on_one_set(group, expected):
    from effx.transkimmer.measure import alternate
    names = ("a1", "b1", "c1", "a2", "b2", "c2")
    ran = []
    calls = {name: (lambda name=name: ran.append(name), 1) for name in names}
    samples = alternate(calls, repeats=3, group=group)
    order = [name for name, _ in itertools.groupby(ran)]   # a call's warm-up runs next to it
    assert order == expected and all(len(s) == 3 for s in samples.values())
