"""Transkimmer invariances on tiny random BERTs (float64): keep-all = plain encoder, removal =
masking, straight-through gradients reach the predictors (never through CLS), analytic FLOPs =
counted FLOPs; top-k attention pruning keeps its k most-attended tokens at its FLOPs target;
the fewer-layer cut is the first k layers."""
import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel

from effx.profiling import count_flops
from effx.transkimmer.encoders import cut_layers
from effx.transkimmer.flops import Dims, baseline_flops, skim_flops
from effx.transkimmer.model import VARIANTS, SkimBert, bert_layer
from effx.transkimmer.predictor import hard_gumbel_keep
from effx.transkimmer.removal import received_attention, skim_forward_removed
from effx.transkimmer.topk import flops_fraction, keep_counts, ratio_for_target, topk_forward


#: the invariances that the GPU path must keep too (run there by scripts/gpu_session.sh)
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                reason="no CUDA GPU here"))]


def tiny_bert(seed=0, layers=3):
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=61, hidden_size=30, num_hidden_layers=layers, num_attention_heads=5,
                     intermediate_size=46, max_position_embeddings=80)
    return BertModel(cfg).double().eval()


def batch(seed=1, B=3, T=23, lengths=(23, 11, 5)):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 61, (B, T), generator=g)
    mask = torch.zeros(B, T, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    types = (torch.arange(T) >= T // 2).long().expand(B, T) * mask
    return ids * mask, mask, types


def skimming(bert, variant="fixed", seed=2):
    """A Transkimmer whose predictors skim about half the tokens (output bias zeroed)."""
    torch.manual_seed(seed)
    m = SkimBert(bert, 2, skim=True, variant=variant).double().eval()
    for p in m.predictors:
        p.out.bias.data.zero_()
    return m


@pytest.mark.parametrize("variant", ["fixed", "paper"])
def test_keeping_every_token_is_the_plain_encoder(variant):
    bert = tiny_bert()
    ids, mask, types = batch()
    ref = bert(ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    m = SkimBert(bert, 2, skim=True, variant=variant).double().eval()   # +5/-5 bias: keeps all
    out = m(ids, mask, types)
    real = mask.bool()
    assert all(bool(k[real].all()) for k in out.keep)
    torch.testing.assert_close(out.hidden[real], ref[real], rtol=0, atol=1e-12)
    plain = m(ids, mask, types, skim=False)
    torch.testing.assert_close(plain.hidden[real], ref[real], rtol=0, atol=1e-12)
    torch.testing.assert_close(out.logits, plain.logits, rtol=0, atol=1e-12)
    removed = skim_forward_removed(m, ids, mask, types)
    torch.testing.assert_close(removed.hidden[real], ref[real], rtol=0, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("lengths", [(23, 11, 5), (23, 23, 23), (7,)])
def test_removal_equals_masking(lengths, device):
    bert = tiny_bert(layers=4)
    ids, mask, types = (t.to(device) for t in batch(B=len(lengths), lengths=lengths))
    m = skimming(bert).to(device)
    masked = m(ids, mask, types)
    removed = skim_forward_removed(m, ids, mask, types)
    real = mask.bool()
    skimmed = [(~k.bool() & real).sum().item() for k in masked.keep]
    assert skimmed[-1] > 0, "the test model must actually skim"
    torch.testing.assert_close(removed.hidden, masked.hidden, rtol=0, atol=1e-10)
    torch.testing.assert_close(removed.logits, masked.logits, rtol=0, atol=1e-10)
    kept = torch.stack([(k.bool() & real).sum(1) for k in masked.keep])
    assert torch.equal(removed.tokens_per_layer, kept)
    keep = torch.stack(masked.keep).bool()                          # (L, B, T)
    first_skim = torch.where(keep.all(0), len(keep), (~keep).int().argmax(0))
    assert torch.equal(removed.dropped_at[real], first_skim[real])
    # logits alone (states=False, what is timed): the same logits and counts, nothing else
    lean = skim_forward_removed(m, ids, mask, types, states=False)
    torch.testing.assert_close(lean.logits, masked.logits, rtol=0, atol=1e-10)
    assert torch.equal(lean.tokens_per_layer, kept) and lean.width_per_layer == removed.width_per_layer
    assert lean.hidden is None and lean.dropped_at is None
    # batch 1 (no padding at all) gives the same per-example result, either way
    for b, n in enumerate(lengths):
        args = ids[b:b + 1, :n], mask[b:b + 1, :n], types[b:b + 1, :n]
        one = skim_forward_removed(m, *args)
        torch.testing.assert_close(one.hidden[0], masked.hidden[b, :n], rtol=0, atol=1e-10)
        lean = skim_forward_removed(m, *args, states=False)
        torch.testing.assert_close(lean.logits, masked.logits[b:b + 1], rtol=0, atol=1e-10)
        assert torch.equal(lean.tokens_per_layer, kept[:, b:b + 1])


def test_cls_always_kept_and_masks_cumulative():
    m = skimming(tiny_bert(layers=4))
    for p in m.predictors:                     # predictors now want to skim everything
        p.out.bias.data[:] = torch.tensor([10.0, -10.0], dtype=torch.float64)
    ids, mask, types = batch()
    out = m(ids, mask, types)
    assert all(bool(k[:, 0].all()) for k in out.keep)
    assert all(bool((later <= earlier).all()) for earlier, later in zip(out.keep, out.keep[1:]))
    assert int(out.keep[-1].sum()) == ids.shape[0]
    assert int(skim_forward_removed(m, ids, mask, types).width_per_layer[0]) == 1


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variant", ["fixed", "paper"])
def test_predictor_gradients_flow_straight_through(variant, device):
    m = skimming(tiny_bert(), variant).train().to(device)
    ids, mask, types = (t.to(device) for t in batch())
    out = m(ids, mask, types)
    (out.logits.sum() + out.skim_fraction).backward()
    for p in m.predictors:
        assert p.proj.weight.grad is not None and p.proj.weight.grad.abs().sum() > 0
        assert p.out.weight.grad.abs().sum() > 0
    assert all(set(k.detach().unique().tolist()) <= {0.0, 1.0} for k in out.keep)


def test_pads_excluded_only_in_fixed_variant():
    bert = tiny_bert()
    ids, mask, types = batch(lengths=(23, 11, 5))
    fixed = SkimBert(bert, 2, skim=True, variant="fixed").double().eval()
    paper = SkimBert(bert, 2, skim=True, variant="paper").double().eval()
    # nothing skimmed: fixed counts real tokens only (1.0); paper counts pads as kept tokens too
    assert float(fixed(ids, mask, types).skim_fraction) == pytest.approx(1.0)
    assert float(paper(ids, mask, types).skim_fraction) == pytest.approx(1.0)
    assert not fixed(ids, mask, types).keep[0][~mask.bool()].any()
    assert paper(ids, mask, types).keep[0][~mask.bool()].all()


def test_analytic_flops_match_counted_flops():
    bert = tiny_bert(layers=4)
    m = skimming(bert)
    ids, mask, types = batch(B=1, lengths=(23,))
    dims = Dims.of(bert.config, 2)
    with torch.no_grad():
        counted_tk = count_flops(lambda: skim_forward_removed(m, ids, mask, types))[0]
        counted_base = count_flops(lambda: m(ids, mask, types, skim=False))[0]
        kept = skim_forward_removed(m, ids, mask, types).tokens_per_layer[:, 0].tolist()
    assert counted_base == baseline_flops(23, dims)
    assert counted_tk == skim_flops(23, kept, dims)
    assert skim_flops(23, [23] * 4, dims) > baseline_flops(23, dims)   # predictors are not free


def test_no_gradient_reaches_the_predictors_through_cls():
    m = SkimBert(tiny_bert(), 2, skim=True).double().train()   # +5 bias: CLS decision is 1, a tie
    ids, mask, types = batch()
    out = m(ids, mask, types)
    sum(k[:, 0].sum() for k in out.keep).backward()
    grads = [p.grad for p in m.predictors.parameters()]
    assert all(g is None or not g.any() for g in grads)


def test_every_other_token_gets_the_full_straight_through_gradient():
    m = skimming(tiny_bert()).train()
    h = torch.randn(3, 9, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    grad_out = torch.randn(3, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    torch.manual_seed(5)
    d = m.decide(0, h)
    (d * grad_out).sum().backward()
    got = [p.grad.clone() for p in m.predictors[0].parameters()]
    m.zero_grad()
    torch.manual_seed(5)                                       # the same Gumbel noise
    ref = hard_gumbel_keep(m.predictors[0](h), m.tau)
    assert bool((ref[:, 1:] == 0).any()) and bool((ref[:, 1:] == 1).any())
    assert torch.equal(d[:, 1:], ref[:, 1:]) and bool((d[:, 0] == 1).all())
    (ref * torch.cat([torch.zeros(3, 1, dtype=torch.float64), grad_out[:, 1:]], 1)).sum().backward()
    for g, p in zip(got, m.predictors[0].parameters()):
        torch.testing.assert_close(g, p.grad, rtol=0, atol=0)


def test_frozen_decisions_are_deterministic_and_give_predictors_no_gradient():
    m = skimming(tiny_bert()).train()
    m.frozen_decisions = True
    for module in m.modules():                     # dropout off: only the decisions could vary
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    ids, mask, types = batch()
    a, b = m(ids, mask, types), m(ids, mask, types)
    assert all(torch.equal(x, y) for x, y in zip(a.keep, b.keep))
    a.logits.sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in m.predictors.parameters())


def test_fewer_layer_cut_is_the_first_k_layers():
    full = tiny_bert(layers=4)
    ids, mask, types = batch()
    with torch.no_grad():
        ref = full(ids, attention_mask=mask, token_type_ids=types,
                   output_hidden_states=True).hidden_states[2]
    cut = cut_layers(tiny_bert(layers=4), 2)
    assert len(cut.encoder.layer) == 2 and cut.config.num_hidden_layers == 2
    m = SkimBert(cut, 2, skim=False).double().eval()
    with torch.no_grad():
        out = m(ids, mask, types)
    real = mask.bool()
    torch.testing.assert_close(out.hidden[real], ref[real], rtol=0, atol=1e-12)
    assert out.logits.shape == (3, 2)
    with pytest.raises(ValueError, match="layers"):
        cut_layers(tiny_bert(layers=4), 5)


def test_spread_cut_keeps_layers_over_the_depth_ending_with_the_last():
    from effx.transkimmer.encoders import LAYER_CHOICES, kept_layers
    from effx.transkimmer.jobs import LAYER_CHOICES as JOB_CHOICES
    assert set(JOB_CHOICES) == set(LAYER_CHOICES)
    assert kept_layers(6, 3, "spread") == [1, 3, 5] and kept_layers(6, 2, "spread") == [2, 5]
    assert kept_layers(6, 3) == [0, 1, 2] and kept_layers(6, 6, "spread") == list(range(6))
    full = tiny_bert(layers=4)
    wanted = [full.encoder.layer[i] for i in (1, 3)]
    cut = cut_layers(full, 2, "spread")
    assert list(cut.encoder.layer) == wanted and cut.config.num_hidden_layers == 2
    with pytest.raises(ValueError, match="layer_choice"):
        kept_layers(6, 3, "middle")


def test_the_first_layers_of_minilm_leave_cls_blind_to_the_input():
    """Why the fewer-layer reference keeps layers spread over the depth (the packaged encoder)."""
    from effx.transkimmer.encoders import cls_spread
    t = cls_spread("minilm", "SST-2", examples=16, layers=(3,)).set_index("choice")
    assert t.loc["first", "which"] == [0, 1, 2] and t.loc["spread", "which"] == [1, 3, 5]
    assert t.loc["first", "relative to all layers"] < 0.05
    assert t.loc["spread", "relative to all layers"] > 0.3


@pytest.mark.parametrize("device", DEVICES)
def test_topk_keeps_its_k_most_attended_tokens(device):
    lengths = (23, 11, 5)
    m = SkimBert(tiny_bert(layers=4), 2, skim=False).double().eval().to(device)
    ids, mask, types = (t.to(device) for t in batch(lengths=lengths))
    ratio, layers = 0.6, (1, 3)
    out = topk_forward(m, ids, mask, types, ratio=ratio, prune_layers=layers)
    for b, n in enumerate(lengths):
        assert out.tokens_per_layer[:, b].tolist() == keep_counts(n, ratio, layers, 4)
    store = {}
    with torch.no_grad():                                     # layer 0 on everything: its scores
        bert_layer(m.layers[0], m.embed(ids, types), mask.bool(), None, received_attention(store))
    for b, n in enumerate(lengths):
        k = keep_counts(n, ratio, layers, 4)[1]
        score = store["received"][b, :n].clone()
        score[0] = float("inf")
        expected = set(torch.topk(score, k).indices.tolist())
        assert set(torch.nonzero(out.dropped_at[b, :n] > 1)[:, 0].tolist()) == expected
        args = ids[b:b + 1, :n], mask[b:b + 1, :n], types[b:b + 1, :n]
        for states in (True, False):                               # batch 1: the same result
            one = topk_forward(m, *args, ratio=ratio, prune_layers=layers, states=states)
            torch.testing.assert_close(one.logits[0], out.logits[b], rtol=0, atol=1e-10)
            assert one.tokens_per_layer[:, 0].tolist() == keep_counts(n, ratio, layers, 4)
    lean = topk_forward(m, ids, mask, types, ratio=ratio, prune_layers=layers, states=False)
    torch.testing.assert_close(lean.logits, out.logits, rtol=0, atol=1e-10)
    assert torch.equal(lean.tokens_per_layer, out.tokens_per_layer)


def test_topk_flops_match_the_target():
    bert = tiny_bert(layers=4)
    m = SkimBert(bert, 2, skim=False).double().eval()
    dims, layers = Dims.of(bert.config, 2), (1, 2, 3)
    rng = np.random.default_rng(0)
    calibration = rng.integers(4, 60, 400)
    ratio = ratio_for_target(calibration, 0.5, layers, dims)
    assert flops_fraction(calibration, ratio, layers, dims) == pytest.approx(0.5, abs=0.01)
    lengths = rng.integers(4, 60, 24)                          # other examples, same distribution
    T = int(lengths.max())
    ids = torch.randint(1, 61, (len(lengths), T), generator=torch.Generator().manual_seed(0))
    mask = (torch.arange(T)[None] < torch.as_tensor(lengths)[:, None]).long()
    out = topk_forward(m, ids * mask, mask, None, ratio=ratio, prune_layers=layers)
    method = sum(skim_flops(int(n), out.tokens_per_layer[:, b].tolist(), dims, predictors=False)
                 for b, n in enumerate(lengths))
    assert method / sum(baseline_flops(int(n), dims) for n in lengths) == pytest.approx(0.5, abs=0.05)
    one = ids[:1, :int(lengths[0])]
    with torch.no_grad():
        counted = count_flops(lambda: topk_forward(m, one, None, None, ratio=ratio, prune_layers=layers))[0]
    assert counted == skim_flops(int(lengths[0]), keep_counts(int(lengths[0]), ratio, layers, 4),
                                 dims, predictors=False)


def test_job_variants_are_the_model_variants():
    from effx.transkimmer.jobs import VARIANTS as JOB_VARIANTS
    assert set(JOB_VARIANTS) == set(VARIANTS)


@pytest.mark.parametrize("lengths", [(23, 11, 5), (23, 23, 23)])
@pytest.mark.parametrize("skim", [True, False])
def test_removal_with_padding_beyond_the_longest_example(skim, lengths):
    """Columns of padding past the longest example (a batch padded to a fixed width) are masked,
    whether the batch shrinks or not."""
    m = skimming(tiny_bert(layers=4))
    ids, mask, types = batch(B=len(lengths), T=30, lengths=lengths)
    masked = m(ids, mask, types, skim=skim)
    removed = skim_forward_removed(m, ids, mask, types, skim=skim)
    real = mask.bool()
    torch.testing.assert_close(removed.hidden[real], masked.hidden[real], rtol=0, atol=1e-10)
    torch.testing.assert_close(removed.logits, masked.logits, rtol=0, atol=1e-10)
