"""Transkimmer invariances on tiny random BERTs (float64): keep-all = plain encoder, removal =
masking, straight-through gradients reach the predictors, analytic FLOPs = counted FLOPs."""
import pytest
import torch
from transformers import BertConfig, BertModel

from effx.profiling import count_flops
from effx.transkimmer.flops import Dims, baseline_flops, skim_flops
from effx.transkimmer.model import SkimBert
from effx.transkimmer.removal import skim_forward_removed


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


@pytest.mark.parametrize("lengths", [(23, 11, 5), (23, 23, 23), (7,)])
def test_removal_equals_masking(lengths):
    bert = tiny_bert(layers=4)
    ids, mask, types = batch(B=len(lengths), lengths=lengths)
    m = skimming(bert)
    masked = m(ids, mask, types)
    removed = skim_forward_removed(m, ids, mask, types)
    real = mask.bool()
    skimmed = [(~k.bool() & real).sum().item() for k in masked.keep]
    assert skimmed[-1] > 0, "the test model must actually skim"
    torch.testing.assert_close(removed.hidden, masked.hidden, rtol=0, atol=1e-10)
    torch.testing.assert_close(removed.logits, masked.logits, rtol=0, atol=1e-10)
    kept = torch.stack([(k.bool() & real).sum(1) for k in masked.keep])
    assert torch.equal(removed.tokens_per_layer, kept)
    # batch 1 (no padding at all) gives the same per-example result
    for b, n in enumerate(lengths):
        one = skim_forward_removed(m, ids[b:b + 1, :n], mask[b:b + 1, :n], types[b:b + 1, :n])
        torch.testing.assert_close(one.hidden[0], masked.hidden[b, :n], rtol=0, atol=1e-10)


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


@pytest.mark.parametrize("variant", ["fixed", "paper"])
def test_predictor_gradients_flow_straight_through(variant):
    m = skimming(tiny_bert(), variant).train()
    ids, mask, types = batch()
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
