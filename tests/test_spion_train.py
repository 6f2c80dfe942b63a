"""SPION training at tiny sizes: the model (dense and per-layer block-sparse), the map capture,
the dense -> sparse switch, the fixed baselines, and resume == straight through."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from effx.attention.block_sparse import band_layout
from effx.errors import ParameterError
from effx.spion.baselines import bigbird_layout, fixed_layout, matched_density, sliding_window_layout
from effx.spion.model import (LraClassifier, LraModelConfig, MapCapture, attention_flops,
                              layer_attention, set_layer_attention)
from effx.spion.pattern import layout_density
from effx.spion.train import SpionRun, SpionRunConfig, lr_factor, train_run




def tiny(**overrides) -> SpionRunConfig:
    """ListOps at length 128, block 16 (8 x 8 blocks), 2 layers, batch 8."""
    base = dict(task="listops", length=128, n_train=64, n_test=24, n_layers=2, block=16,
                filter_size=7, quantile=0.8, method="spion_cf", capture_every=4, threshold=100.0,
                steps=20, batch_size=8, lr=1e-3, warmup=3, eval_batch_size=24, threads=1)
    return SpionRunConfig(**{**base, **overrides})


def _model(n_layers=2, seed=0):
    torch.manual_seed(seed)
    return LraClassifier(LraModelConfig(vocab_size=16, num_classes=10, n_layers=n_layers)).eval()


# ------------------------------------------------------------------------------ the model

def test_model_dense_and_per_layer_block_sparse():
    model = _model(n_layers=3)
    ids = torch.randint(1, 16, (2, 75))                               # odd length: 5 blocks of 16
    mask = torch.ones(2, 75, dtype=torch.bool)
    mask[1, 50:] = False
    dense = model(ids, mask)
    assert dense.shape == (2, 10) and bool(torch.isfinite(dense).all())
    # all blocks listed + standard softmax == dense attention
    set_layer_attention(model, [torch.ones(5, 5, dtype=torch.bool)] * 3, block=16, softmax="standard")
    torch.testing.assert_close(model(ids, mask), dense, atol=1e-5, rtol=1e-5)
    # one layout per layer, each kept by its own layer; None = dense
    layouts = [band_layout(5, 0), None, band_layout(5, 1)]
    set_layer_attention(model, layouts, block=16, softmax="faithful")
    names = [name for name, _ in layer_attention(model)]
    assert names == ["block_sparse", "sdpa", "block_sparse"]
    assert torch.equal(layer_attention(model)[0][1], layouts[0])
    assert torch.equal(layer_attention(model)[2][1], layouts[2])
    sparse = model(ids, mask)
    assert bool(torch.isfinite(sparse).all()) and not torch.allclose(sparse, dense, atol=1e-4)
    with pytest.raises(ParameterError):
        set_layer_attention(model, layouts[:2], block=16)


@pytest.mark.parametrize("softmax", ["dense", "standard", "faithful"])
def test_padding_does_not_change_the_prediction(softmax):
    model = _model()
    ids = torch.randint(1, 16, (1, 48))
    if softmax != "dense":
        set_layer_attention(model, [band_layout(3, 1), band_layout(3, 0)], block=16, softmax=softmax)
    alone = model(ids, torch.ones(1, 48, dtype=torch.bool))
    padded_ids = torch.cat([ids, torch.zeros(1, 16, dtype=torch.long)], 1)
    mask = torch.arange(64)[None] < 48
    if softmax != "dense":           # 4 blocks now: the extra block row/column is all padding
        set_layer_attention(model, [band_layout(4, 1), band_layout(4, 0)], block=16, softmax=softmax)
    torch.testing.assert_close(model(padded_ids, mask), alone, atol=1e-5, rtol=1e-5)


def test_map_capture_averages_probabilities_over_real_queries():
    model = _model()
    ids = torch.randint(1, 16, (3, 40))
    mask = torch.ones(3, 40, dtype=torch.bool)
    mask[0, 30:] = False
    maps = []
    for chunk in (1, 2, 3):                                            # 3 items: one chunk, or 2 + 1
        cap = MapCapture(model, chunk=chunk)
        model(ids, mask)
        maps.append(cap.maps())
    for other in maps[1:]:
        for a, b in zip(maps[0], other):
            torch.testing.assert_close(a, b)
    maps = maps[0]
    assert len(maps) == 2 and maps[0].shape == (40, 40) and maps[0].dtype == torch.float64
    # each real query's row sums to 1; padded queries add nothing; padded keys get nothing
    expected = mask.double().mean(0)                                   # (T,) share of real rows
    torch.testing.assert_close(maps[1].sum(-1), expected)
    assert not model.encoder.blocks[0].attn.core._forward_hooks        # hooks removed


def test_attention_flops_count_computed_blocks():
    f = attention_flops([None, band_layout(4, 0)], length=64, block=16, n_heads=2, head_dim=32)
    assert f["per_layer"][0] == 4 * 2 * 32 * 64 * 64
    assert f["per_layer"][1] == 4 * 2 * 32 * 4 * 16 * 16
    assert f["fraction_of_dense"] == pytest.approx((1 + 0.25) / 2)


# ------------------------------------------------------------------------------ baselines

def test_fixed_baselines_reach_their_density():
    for density in (0.1, 0.3, 0.6):
        sw = sliding_window_layout(16, density)
        assert abs(layout_density(sw) - density) <= 1 / 16 and bool(sw.diagonal().all())
        bb = bigbird_layout(16, density, seed=1)
        assert bool(bb[0].all() and bb[:, 0].all() and bb.diagonal(1).all())
        assert layout_density(bb) >= min(density, 0.99) - 1 / 16
    assert torch.equal(bigbird_layout(16, 0.4, seed=1), bigbird_layout(16, 0.4, seed=1))
    assert not torch.equal(bigbird_layout(16, 0.4, seed=1), bigbird_layout(16, 0.4, seed=2))
    with pytest.raises(ParameterError):
        fixed_layout("longformer", 8, 0.3)


# ------------------------------------------------------------------------------ training

def test_config_key_and_validation():
    cfg = tiny()
    key = cfg.key()
    for f in dataclasses.fields(cfg):
        assert (f"{f.name}=" in key) == (f.name not in ("checkpoint_every", "log_every_s"))
    assert tiny(quantile=0.9).key() != key and tiny(softmax="standard").key() != key
    assert tiny(checkpoint_every=5).key() == key
    with pytest.raises(ParameterError):
        tiny(method="reformer")
    with pytest.raises(ParameterError):
        tiny(method="bigbird")                                         # needs a density
    with pytest.raises(ParameterError):
        tiny(density=0.2)                                              # flood fill has no density
    with pytest.raises(ParameterError):
        tiny(switch_rule="fixed")                                      # needs switch_step


def test_learning_rate_restarts_at_the_switch():
    assert lr_factor(0, 0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 0, 100, 10) == pytest.approx(1.0)
    assert lr_factor(99, 0, 100, 10) < 0.02
    assert lr_factor(60, 60, 100, 10) == pytest.approx(0.1)            # warm-up again


def test_spion_switches_then_really_runs_block_sparse():
    logs = []
    run = SpionRun(tiny(), log=logs.append)
    rec = run.run()
    # captures at 4, 8, 12; two distances per layer are needed, so the rule can hold at 12
    assert [c["step"] for c in rec["captures"]] == [4, 8, 12] and rec["switched_at"] == 12
    assert all(d is not None and d > 0 for d in rec["captures"][-1]["distances"])
    assert rec["history"]["phase"] == ["dense"] * 13 + ["sparse"] * 7
    assert rec["history"]["lr"][13] == pytest.approx(1e-3 / 3)      # schedule restarted
    for (name, layout), learned in zip(layer_attention(run.model), rec["layouts"]):
        assert name == "block_sparse" and layout.tolist() == learned
        assert bool(layout.diagonal().all()) and layout_density(layout) < 1.0
    assert rec["seconds_per_step"]["dense"] > 0 and rec["seconds_per_step"]["sparse"] > 0
    assert rec["peak_memory_bytes"]["dense"] > 0 and rec["peak_memory_bytes"]["sparse"] > 0
    assert rec["attention_flops_forward"]["fraction_of_dense"] == pytest.approx(rec["mean_density"])
    assert 0.0 <= rec["test_accuracy"] <= 1.0 and any("switched" in line for line in logs)
    assert matched_density(rec) == pytest.approx(rec["mean_density"])


def test_fixed_switch_step_and_fixed_baseline():
    rec = train_run(tiny(method="spion_c", density=0.25, switch_rule="fixed", switch_step=6,
                         steps=12))
    assert rec["switched_at"] == 8                                      # first capture >= 6
    # top 25% of the 64 blocks, plus whatever of the block diagonal they miss
    assert all(0.25 <= d <= 0.25 + 8 / 64 for d in rec["layout_density"])
    rec = train_run(tiny(method="sliding_window", density=0.4, steps=6))
    assert rec["history"]["phase"] == ["sparse"] * 6 and rec["switched_at"] is None
    assert rec["layouts"][0] == rec["layouts"][1] == band_layout(8, 1).tolist()


def test_resume_after_a_kill_equals_straight_through(tmp_path):
    cfg = tiny(checkpoint_every=5)
    straight = SpionRun(cfg)
    expected = straight.run()

    class Killed(Exception):
        pass

    def kill_at_11(step, row):
        if step == 11:
            raise Killed

    ckpt = tmp_path / "run.pt"
    with pytest.raises(Killed):
        SpionRun(cfg, checkpoint=ckpt, on_step=kill_at_11).run()       # saved after steps 5 and 10
    logs = []
    resumed = SpionRun(cfg, checkpoint=ckpt, log=logs.append)
    assert resumed.state["step"] == 10 and "resumed" in logs[0]
    got = resumed.run()
    for name in ("loss", "phase", "capture", "lr"):
        assert got["history"][name] == expected["history"][name], name
    assert got["switched_at"] == expected["switched_at"] == 12
    assert got["layouts"] == expected["layouts"]
    assert got["test_accuracy"] == expected["test_accuracy"]
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ParameterError):
        SpionRun(tiny(checkpoint_every=5, seed=1), checkpoint=ckpt)     # another run's file


def test_the_introduction_and_the_comparison_quote_the_same_claims():
    from effx.studies.spion import analysis as A
    c = {"ListOps_step_speedup": 1.81, "ListOps_alone_speedup": 2.58, "ListOps_density": 0.07,
         "ListOps_acc_vs_dense": -0.4, "ListOps_step_vs_sliding_window": 0.93}
    lengths = {"ListOps": 512, "Image": 576}
    intro = A.answer(c, lengths)
    bullets = A.task_claims(c, ["ListOps", "Image"], lengths).splitlines()
    short = A.task_claim(c, "ListOps", 512)
    head = short.split("; accuracy")[0]                      # the step vs fixed patterns follows it
    assert short in intro and bullets[0].startswith(f"- **ListOps**: {head}")
    assert "-0.4 points against dense" in bullets[0]
    assert "1.81x" in short and "2.58x" in short and "7%" in short and "-0.4" in short
    assert "0.93x" in bullets[0] and "0.93x" not in intro          # the detail stays in the chapter
    assert bullets[1] == "- **Image**: no SPION-CF run recorded."
    assert A.answer({}, lengths) == "No SPION run is recorded yet."
