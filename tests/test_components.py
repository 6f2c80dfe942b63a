"""Cost per Transformer component: every module is assigned once, components add up, FLOPs exact."""
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported

import pytest
import torch
from torch import nn

from effx.models import zoo
from effx.models.components import COMPONENTS, Rule, assign, family_of
from effx.models.encoder import Encoder, EncoderConfig, encoder_flops
from effx.profiling.components import ModuleTracer, profile_components


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small models on a shared 2-core machine: one thread (see tests/test_zoo.py)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small_encoder(attention="sdpa", **kw) -> Encoder:
    torch.manual_seed(0)
    cfg = dict(d_model=60, n_heads=4, n_layers=2, d_ff=124, vocab_size=97, attention=attention)
    return Encoder(EncoderConfig(**{**cfg, **kw})).eval()


def ids(batch=2, t=63, vocab=97):
    return {"input_ids": torch.randint(0, vocab, (batch, t), generator=torch.Generator().manual_seed(0))}


ZOO_BUILDS = [(name, "sdpa") for name in zoo.ZOO] + [("bert", "eager"), ("hubert", "eager"),
                                                     ("vit", "eager"), ("swin", "eager")]


@pytest.mark.parametrize("name,impl", ZOO_BUILDS, ids=[f"{n}-{i}" for n, i in ZOO_BUILDS])
def test_every_module_of_every_zoo_model_has_exactly_one_component(name, impl):
    model = zoo.get_entry(name).build(size="tiny", attn_implementation=impl)
    assignment = assign(model)          # raises when a module matches no rule or several
    names = [n for n, _ in model.named_modules(remove_duplicate=False)]
    assert sorted(assignment) == sorted(names)
    assert set(assignment.values()) <= set(COMPONENTS)
    for part in ("qkv_projection", "attention_core", "output_projection", "feed_forward"):
        assert part in assignment.values(), f"{name}: nothing assigned to {part}"


@pytest.mark.parametrize("attention", ["sdpa", "eager", "sliding_window", "block_sparse", "nystrom"])
def test_every_module_of_the_effx_encoder_has_exactly_one_component(attention):
    model = small_encoder(attention)
    assignment = assign(model)
    assert sorted(assignment) == sorted(n for n, _ in model.named_modules(remove_duplicate=False))
    assert assignment["blocks.1.attn.core"] == "attention_core"
    assert assignment["blocks.0.attn.qkv"] == "qkv_projection"
    assert assignment["blocks.0.ffn.up"] == "feed_forward"


def test_unknown_or_ambiguous_modules_fail_loudly():
    model = small_encoder()
    model.extra = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="'extra'.*no rule"):
        assign(model)
    rules = (Rule("input", name=r".*"), Rule("other", name=r"embed"))
    with pytest.raises(ValueError, match="2 rules"):
        assign(small_encoder(), rules)
    with pytest.raises(KeyError, match="no component table"):
        family_of(nn.Sequential(nn.Linear(2, 2)))


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_counted_flops_per_component_equal_the_analytic_formula(attention):
    model = small_encoder(attention)
    r = profile_components(model, lambda: model(**ids()), assign(model), mode="inference", repeats=1)
    expected = encoder_flops(model.cfg, batch=2, t=63)
    assert {k: v for k, v in r["flops"].items() if v} == expected     # exact, per component
    assert sum(r["flops"].values()) == r["flops_total"]               # nothing unattributed


def test_training_flops_are_attributed_forward_and_backward():
    model = small_encoder("eager")
    r = profile_components(model, lambda: model(**ids()), assign(model), mode="training", repeats=1)
    fwd = encoder_flops(model.cfg, batch=2, t=63)
    assert sum(r["flops"].values()) == r["flops_total"]
    for comp in ("qkv_projection", "output_projection", "feed_forward"):
        assert r["flops"][comp] == 3 * fwd[comp]        # backward: grads of input and weight
    # eager attention: 2 matmuls forward, 4 backward (the first layer's input grad included)
    assert r["flops"]["attention_core"] == 3 * fwd["attention_core"]


def test_exclusive_times_sum_exactly_to_the_root_interval():
    model = small_encoder()
    tracer = ModuleTracer(model)                      # no overhead correction: pure bookkeeping
    with tracer, torch.no_grad():
        model(**ids())
    times = tracer.forward_times()
    root = tracer.calls[0]
    assert root[0] == "" and len(tracer.calls) == sum(1 for _ in model.modules()) - 1  # ModuleList not called
    assert sum(times.values()) == pytest.approx(root[2] - root[1], rel=1e-9)
    assert all(v > 0 for k, v in times.items() if k.endswith(("qkv", "core", "up")))


@pytest.mark.parametrize("mode", ["inference", "training"])
def test_components_add_up_to_the_plain_step_time(mode):
    model = small_encoder(d_model=128, d_ff=512, n_layers=2)
    # this thread's CPU time (one torch thread): other jobs pre-empting the process, which on a
    # shared machine stretch wall-clock steps by 2-5x at random, do not count
    r = profile_components(model, lambda: model(**ids(batch=2, t=256)), assign(model), mode=mode,
                           repeats=7, timer=time.thread_time)
    sums = [sum(r["time_s"][c][i] for c in r["time_s"]) for i in range(7)]
    # each repeat times a plain step and, right after it, an instrumented one: median of the pairs
    ratio = statistics.median(s / p for s, p in zip(sums, r["plain_s"]))
    assert ratio == pytest.approx(1.0, abs=0.1)
    core = statistics.median(r["time_s"]["attention_core"])
    assert core > 0 and statistics.median(r["time_s"]["unattributed"]) < 0.1 * min(r["plain_s"])
    if mode == "training":
        assert statistics.median(r["backward_s"]["feed_forward"]) > 0


def test_every_backward_node_but_the_loss_belongs_to_a_module():
    model = small_encoder()
    tracer = ModuleTracer(model)
    with tracer:
        loss = model(**ids()).float().sum()
        tracer.watch_backward(loss)
        loss.backward()
    owners = [n[0] for n in tracer.nodes]
    assert owners.count(None) <= 2                    # the loss's sum (and its float cast)
    assert all(n[1] is not None and n[2] is not None for n in tracer.nodes)
    params = [n for n in owners if n and n.endswith("qkv")]
    assert params, "the qkv weights' gradient accumulation belongs to the qkv module"


def test_saved_activations_are_attributed_without_weights():
    b, t = 2, 63
    model = small_encoder("eager")
    r = profile_components(model, lambda: model(**ids(b, t)), assign(model), mode="inference", repeats=1)
    heads, layers = model.cfg.n_heads, model.cfg.n_layers
    # eager attention keeps its (B, H, T, T) probabilities for backward, per layer
    assert r["saved_bytes"]["attention_core"] >= layers * b * heads * t * t * 4
    weights = sum(p.numel() * 4 for p in model.parameters())
    one = profile_components(model, lambda: model(**ids(1, 1)), assign(model), mode="inference",
                             repeats=1)
    assert sum(one["saved_bytes"].values()) < weights / 10


def test_study_parameters_and_points():
    from effx.errors import ParameterError
    from effx.params import validate
    from effx.pipeline import profile_params
    from effx.studies import cost_breakdown as study
    P = validate("cost_breakdown", dict(profile_params("cost_breakdown", "tiny"), profile="tiny"))
    pts = study.points(P)
    modes = {(p["modality"], p["mode"]) for p in pts}
    assert ("controlled", "training") in modes and ("text", "training") not in modes
    assert len(pts) == sum(len(P["models"][m]) * (len(P["lengths"][m]) + len(P["training_lengths"].get(m, [])))
                           for m in P["modalities"])
    bad = dict(P, training_lengths={"text": [12.5]})
    with pytest.raises(ParameterError, match="training_lengths"):
        validate("cost_breakdown", bad)


def test_attention_becomes_largest_where_its_share_overtakes_every_other_component():
    import pandas as pd

    from effx.studies.cost_breakdown import attention_largest
    rows = []
    for length, core, ffn in ((128, 0.2, 0.5), (512, 0.4, 0.4), (2048, 0.6, 0.3)):
        for comp, share in (("attention_core", core), ("feed_forward", ffn),
                            ("qkv_projection", 0.05), ("input", 1 - core - ffn - 0.05)):
            rows.append(dict(modality="text", model="m", mode="inference", device="cpu", batch=1,
                             length=length, kind="time", component=comp, value=share, share=share))
    out = attention_largest(pd.DataFrame(rows)).set_index("attention")
    assert out.loc["core", "status"] == "crossing"
    assert out.loc["core", "length"] == pytest.approx(512)          # ties count as largest
    assert out.loc["all attention", "status"] == "crossing"                # 0.25 < 0.5, 0.45 > 0.4
    assert 128 < out.loc["all attention", "length"] < 512
