"""Transkimmer study plumbing: collation of real GLUE rows, the real MiniLM checkpoint,
parameter validation, resumable runs."""
import pytest
import torch

from effx.errors import ParameterError
from effx.params import validate
from effx.studies import transkimmer_glue as S

GOOD = dict(tasks=["SST-2"], encoder="minilm", lambdas=[2.0, 0.5], variant="fixed", epochs=0.5,
            max_length=64, batch_size=8, device="cpu", subset=16, profile="pytest")


@pytest.fixture(scope="module")
def minilm():
    from effx.transkimmer.model import load_encoder
    return load_encoder("minilm")


def test_collation_of_real_rows(minilm):
    from effx.data.glue import load_glue
    from effx.transkimmer.train import collate, encode
    _, tok = minilm
    single = encode(tok, load_glue("SST-2", "dev").head(7), max_length=128)
    b = collate(single, range(7))
    lengths = b["attention_mask"].sum(1)
    assert b["input_ids"].shape[1] == int(lengths.max())           # padded to its own longest only
    assert torch.equal(lengths, torch.tensor(single.lengths))
    assert bool((b["input_ids"][:, 0] == tok.cls_token_id).all())
    assert bool((b["input_ids"][~b["attention_mask"].bool()] == tok.pad_token_id).all())
    assert set(b["labels"].tolist()) <= {0, 1} and not b["token_type_ids"].any()
    pair = encode(tok, load_glue("MRPC", "dev").head(5), max_length=40)
    p = collate(pair, range(5), pad_to=48)
    assert p["input_ids"].shape[1] == 48 and max(pair.lengths) <= 40   # truncated, then padded
    assert bool(p["token_type_ids"].any(1).all())                      # second sentence: type 1
    first_sep = (p["input_ids"][0] == tok.sep_token_id).nonzero()[0, 0]
    assert int(p["token_type_ids"][0, first_sep]) == 0 and int(p["token_type_ids"][0, first_sep + 1]) == 1


def test_real_minilm_keep_all_and_removal(minilm):
    from effx.transkimmer.model import SkimBert
    from effx.transkimmer.removal import skim_forward_removed
    bert, tok = minilm
    bert.eval()
    enc = tok(["a gripping , funny and moving film .", "dull"], padding=True, return_tensors="pt")
    args = (enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    with torch.no_grad():
        ref = bert(*args).last_hidden_state
        m = SkimBert(bert, 2, skim=True).eval()
        out = m(*args)
        real = enc["attention_mask"].bool()
        torch.testing.assert_close(out.hidden[real], ref[real], rtol=1e-5, atol=1e-5)
        for p in m.predictors:               # make it skim, then removal must equal masking
            p.out.bias.zero_()
        masked, removed = m(*args), skim_forward_removed(m, *args)
    assert int(masked.keep[-1][real].sum()) < int(real.sum())
    torch.testing.assert_close(removed.hidden, masked.hidden, rtol=1e-4, atol=1e-4)


def test_parameters_validate():
    P = validate("transkimmer_glue", GOOD)
    assert P["lambdas"] == [0.5, 2.0] and P["device"] == "cpu"
    for bad in [dict(tasks=["MNLI"]), dict(variant="both"), dict(lambdas=[0.0]), dict(lambdas=[]),
                dict(encoder="/no/such/checkpoint"), dict(subset=-1), dict(epochs=0)]:
        name = next(iter(bad))
        with pytest.raises(ParameterError, match=f"'{name}'"):
            validate("transkimmer_glue", {**GOOD, **bad})
    with pytest.raises(ParameterError, match="SST-2"):           # names the allowed tasks
        validate("transkimmer_glue", {**GOOD, "tasks": ["MNLI"]})
    P = validate("transkimmer_glue", {**GOOD, "lambdas": {"SST-2": [1, 3]}, "epochs": {"SST-2": 0.1}})
    planned = S.planned_points(P)
    assert [(pt["method"], pt["lambda"], pt.get("init")) for pt in planned] == [
        ("baseline", 0.0, None), ("baseline", 0.0, "finetuned"),
        ("transkimmer", 1.0, "finetuned"), ("transkimmer", 3.0, "finetuned")]
    assert {S.checkpoint_path(pt) for pt in planned} == {S.checkpoint_path(planned[0])}


def test_run_resumes_without_retraining(tmp_path, monkeypatch):
    from effx.results import ResultStore, metric
    calls = []

    def fake(point, log=None):
        calls.append(point)
        return {"accuracy": metric(0.9, "score")}, {}
    monkeypatch.setattr(S, "measure_point", fake)
    P = validate("transkimmer_glue", GOOD)
    store = ResultStore("transkimmer_glue", "pytest", tmp_path)
    S.run(P, store, log=lambda m: None)
    assert len(calls) == 4
    S.run(P, ResultStore("transkimmer_glue", "pytest", tmp_path), log=lambda m: None)
    assert len(calls) == 4                                          # nothing trained again


def _record(store, P, method, acc, lam=0.0, init="pretrained", flops=None):
    from effx.results import metric
    pt = S.point_of(P, "SST-2", method, "fixed" if method == "transkimmer" else "none", lam, init)
    m = {"accuracy": metric(acc, "score"), "flops_baseline": metric(100.0, "FLOP/example"),
         "flops_pad128": metric(400.0, "FLOP/example"), "flops_pad512": metric(1600.0, "FLOP/example"),
         "time_unpadded_b32": metric(1.0, "s/example"), "time_pad128_b32": metric(2.0, "s/example"),
         "time_pad512_b32": metric(5.0, "s/example")}
    if method == "transkimmer":
        m.update({"flops_transkimmer": metric(flops, "FLOP/example"),
                  "counted_flops_baseline": metric(100.0, "FLOP/example"),
                  "counted_flops_transkimmer": metric(flops, "FLOP/example"),
                  "time_baseline_b1": metric(1.0, "s/example"), "time_transkimmer_b1": metric(0.8, "s/example"),
                  "time_baseline_b32": metric(1.0, "s/example"), "time_transkimmer_b32": metric(0.5, "s/example"),
                  "keep_l0": metric(0.5, "fraction"), "keep_l1": metric(0.25, "fraction")})
    store.record(pt, m)


@pytest.mark.parametrize("learned", [True, False])
def test_summary_compares_with_the_equal_budget_baseline(tmp_path, learned):
    from effx.results import ResultStore
    P = validate("transkimmer_glue", {**GOOD, "subset": 0})
    store = ResultStore("transkimmer_glue", "pytest", tmp_path)
    store.start_run(P, "cpu")
    base = 0.85 if learned else 0.509
    _record(store, P, "baseline", base)
    _record(store, P, "baseline", base + 0.01, init="finetuned")
    _record(store, P, "transkimmer", base + 0.005, lam=2.0, init="finetuned", flops=25.0)
    summ = S.summary(store.table())
    r = summ.iloc[0]
    assert r.baseline == pytest.approx(100 * (base + 0.01)) and r.baseline_1x == pytest.approx(100 * base)
    assert r.delta == pytest.approx(-0.5) and r.flops_speedup == pytest.approx(4.0)
    assert r.wall_b32 == pytest.approx(2.0) and r.fake_flops_pad128 == pytest.approx(4.0)
    assert bool(r.learned) is learned and r.majority == pytest.approx(50.92, abs=0.01)
    head = S.headline(summ)
    assert list(head.columns) == list(summ.columns) and len(head) == int(learned)
    verdict, comparison = S.target_verdict(head), S.paper_comparison(head, summ)
    if learned:
        assert "FLOPs speedup 4.00x" in verdict and "met" in verdict
        assert "SST-2" in comparison and "Left out" not in comparison
    else:
        assert verdict.startswith("No SST-2 result") and "Left out: SST-2" in comparison
