"""Transkimmer training: fresh batches per stage and epoch, length-bucketed batches, a stage
interrupted and resumed ends with the weights of one run straight through, and our skim-loss
weight converts to the official code's as documented (real SST-2 rows, MiniLM cut to 2 layers)."""
import numpy as np
import pytest
import torch

from effx.transkimmer.data import (bucketed_batches, epoch_batches, load_split, padded_tokens,
                                   random_batches)
from effx.transkimmer.encoders import load_encoder, save_cut_encoder
from effx.transkimmer.loss import (distill_loss, fill_ratio, lambda_from_paper, lambda_to_paper,
                                   official_fill_ratio)
from effx.transkimmer.measure import timing_batches, timing_sets
from effx.transkimmer.model import SkimBert
from effx.transkimmer.train import Stage, train_stage


@pytest.fixture(scope="module")
def minilm2(tmp_path_factory):
    folder = save_cut_encoder("minilm", 2, tmp_path_factory.mktemp("enc") / "minilm2")
    return folder, load_encoder(folder)[1]


@pytest.fixture(scope="module")
def sst2_lengths(minilm2):
    return load_split("SST-2", "train", minilm2[1], 128, subset=4000).lengths


def test_stages_and_epochs_draw_different_batches(sst2_lengths):
    n = len(sst2_lengths)
    one = Stage(1, epochs=0.25, lr=1e-4).batches(sst2_lengths)
    two = Stage(2, epochs=0.25, lr=1e-4).batches(sst2_lengths)
    seen1, seen2 = {i for b in one for i in b}, {i for b in two for i in b}
    assert len(seen1) == len(seen2) == pytest.approx(n / 4, abs=32)
    assert len(seen1 & seen2) == pytest.approx(n / 16, rel=0.3)     # independent quarters
    assert len(seen1 | seen2) / n == pytest.approx(1 - 0.75 ** 2, abs=0.03)
    assert Stage(1, 0.25, 1e-4, seed=1).batches(sst2_lengths) != one
    assert Stage(1, 0.25, 1e-4).batches(sst2_lengths) == one          # a function of its settings
    epochs = Stage(1, epochs=2, lr=1e-4).batches(sst2_lengths)
    half = len(epochs) // 2
    assert sorted(i for b in epochs[:half] for i in b) == list(range(n))   # each epoch: all, once
    assert epochs[:half] != epochs[half:]
    assert epoch_batches(sst2_lengths, 32, 0, 1, 0, bucketed=False) != epochs[:half]


def test_bucketed_batches_are_length_homogeneous(sst2_lengths):
    lengths, rng = sst2_lengths, np.random.default_rng(0)
    buckets = bucketed_batches(lengths, 32, rng)
    randoms = random_batches(len(lengths), 32, np.random.default_rng(0))
    assert sorted(i for b in buckets for i in b) == list(range(len(lengths)))
    real = int(lengths.sum())
    assert padded_tokens(lengths, buckets) < 1.1 * real           # ~no padding
    assert padded_tokens(lengths, randoms) > 1.5 * real           # random batches: lots of it
    spread = np.mean([np.ptp(lengths[b]) for b in buckets])
    assert spread <= 2.0 and np.mean([np.ptp(lengths[b]) for b in randoms]) > 20
    means = [lengths[b].mean() for b in buckets]                 # the batch order is shuffled
    assert abs(np.corrcoef(np.arange(len(means)), means)[0, 1]) < 0.2
    assert fill_ratio(lengths, buckets) > 0.9 > 0.5 > fill_ratio(lengths, randoms)


def _tiny_stage(minilm2, **kw):
    folder, tok = minilm2
    data = load_split("SST-2", "train", tok, 32, subset=48)
    torch.manual_seed(0)
    model = SkimBert(load_encoder(folder)[0], 2, skim=True)
    stage = Stage(2, epochs=2, lr=1e-4, batch_size=8, predictor_lr=1e-2, skim_lambda=2.0,
                  frozen_epochs=0.5, **kw)
    return model, data, stage


class Stop(KeyboardInterrupt):
    pass


def test_interrupted_stage_resumes_to_the_same_weights(minilm2, tmp_path):
    model, data, stage = _tiny_stage(minilm2, distill=0.5)
    teacher = torch.randn(len(data), 2, generator=torch.Generator().manual_seed(0))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    quiet = dict(teacher=teacher, log=lambda m: None)
    at_freeze = {}

    def record(step):                                # decisions freeze after step 9 of 12
        if step == 9:
            at_freeze.update({k: v.clone() for k, v in model.predictors.state_dict().items()})
    straight = train_stage(model, data, stage, on_step=record, **quiet)
    assert straight["steps"] == 12 and straight["step"][-1] == 12
    final = model.state_dict()
    path = tmp_path / "progress.pt"
    for stop_at in (4, 10):                          # before and after decisions freeze (step 9)
        model.load_state_dict(start)

        def hook(step, stop_at=stop_at):
            if step == stop_at:
                raise Stop
        with pytest.raises(Stop):
            train_stage(model, data, stage, state_path=path, checkpoint_every_s=0, on_step=hook, **quiet)
    model.load_state_dict(start)                     # a fresh process would start from scratch
    resumed = train_stage(model, data, stage, state_path=path, **quiet)
    assert resumed["resumed_at"] == [4, 10]
    for k, v in model.state_dict().items():
        assert torch.equal(v, final[k]), k
    assert resumed["loss"] == straight["loss"] and resumed["kept_per_layer"] == straight["kept_per_layer"]
    # predictors learn until the decisions freeze, then never move again
    for k, v in at_freeze.items():
        assert torch.equal(final["predictors." + k], v), k
    assert not torch.equal(at_freeze["0.out.bias"], start["predictors.0.out.bias"])


def test_stale_state_of_another_stage_is_refused(minilm2, tmp_path):
    model, data, stage = _tiny_stage(minilm2)
    path = tmp_path / "progress.pt"
    with pytest.raises(Stop):
        train_stage(model, data, stage, state_path=path, checkpoint_every_s=0,
                    on_step=lambda s: (_ for _ in ()).throw(Stop()), log=lambda m: None)
    other = Stage(2, epochs=2, lr=2e-4, batch_size=8)
    with pytest.raises(RuntimeError, match="another stage"):
        train_stage(model, data, other, state_path=path, log=lambda m: None)


def test_skim_lambda_converts_to_the_official_one():
    """Per real token, lambda x (our kept fraction) and lambda_paper x (the official one: all
    positions of the padded batch) push equally hard when lambda = lambda_paper x rho."""
    L, lengths = 3, torch.tensor([7, 3, 5, 2])
    T = int(lengths.max())
    valid = (torch.arange(T)[None] < lengths[:, None]).double()
    m = torch.rand(L, 4, T, dtype=torch.float64, requires_grad=True)
    lambda_paper = 0.5
    rho = fill_ratio(lengths.numpy(), [np.arange(4)])
    assert rho == pytest.approx(17 / 28)
    official = lambda_paper * (m.sum(-1).mean(-1) / T).mean()
    (g_official,) = torch.autograd.grad(official, m)
    ours = lambda_from_paper(lambda_paper, rho) * ((m * valid).sum((1, 2)) / valid.sum()).mean()
    (g_ours,) = torch.autograd.grad(ours, m)
    real = valid.bool().expand(L, -1, -1)
    torch.testing.assert_close(g_ours[real], g_official[real], rtol=1e-12, atol=0)
    assert lambda_to_paper(lambda_from_paper(0.7, rho), rho) == pytest.approx(0.7)
    same = np.full(64, 9)                                        # equal lengths: nothing padded
    assert official_fill_ratio(same) == 1.0


def test_distillation_loss():
    s = torch.randn(5, 3)
    assert float(distill_loss(s, s.clone(), 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distill_loss(s, s + torch.randn(5, 3), 2.0)) > 0
    r = torch.randn(5, 1)
    assert float(distill_loss(r, r + 1.0)) == pytest.approx(1.0)


def test_the_teacher_pass_reports_its_eta_and_is_cached(minilm2, tmp_path):
    from effx.transkimmer.execute import teacher_logits
    model, data, _ = _tiny_stage(minilm2)
    said = []
    logits = teacher_logits(model, data, tmp_path / "t.pt", log=said.append, log_every_s=0)
    assert logits.shape == (48, 2) and torch.isfinite(logits).all()
    assert "batch 1/1" not in " ".join(said)                    # 48 examples: one batch of 64
    again = []
    assert torch.equal(teacher_logits(model, data, tmp_path / "t.pt", log=again.append), logits)
    assert again == []                                          # cached: no second pass
    more = load_split("SST-2", "train", minilm2[1], 32, subset=200)
    said.clear()
    teacher_logits(model, more, tmp_path / "u.pt", log=said.append, log_every_s=0)
    assert [s.split(": ", 1)[1].split(",")[0] for s in said[1:]] == ["batch 1/4", "batch 2/4", "batch 3/4"]
    assert all("ETA " in s for s in said[1:])


@pytest.mark.parametrize("every_s, saved_steps", [(1e9, []), (0.0, [1, 2])])
def test_a_non_finite_loss_stops_the_stage_naming_its_step_before_any_checkpoint(
        minilm2, tmp_path, monkeypatch, every_s, saved_steps):
    """The host reads the losses every few steps (each read stalls a GPU); a NaN among them still
    stops the stage with the step it appeared at (read there at step 5, the curve's), and no
    checkpoint holds it (with a checkpoint due every step, steps 1 and 2 are saved, 3 is not)."""
    import effx.transkimmer.train as T
    model, data, stage = _tiny_stage(minilm2)
    original, calls, saved = T.task_loss, [], []

    def poisoned(logits, labels):
        calls.append(1)
        loss = original(logits, labels)
        return loss * float("nan") if len(calls) == 3 else loss
    monkeypatch.setattr(T, "task_loss", poisoned)
    monkeypatch.setattr(T, "save_atomic", lambda obj, path: saved.append(obj["step"]))
    with pytest.raises(FloatingPointError, match="at step 3$"):
        T.train_stage(model, data, stage, state_path=tmp_path / "s.pt", log=lambda m: None,
                      checkpoint_every_s=every_s, curve_every=5)
    assert saved == saved_steps


def test_batch_32_is_timed_on_length_sorted_batches_against_random_batches_of_the_same_examples(
        sst2_lengths):
    """The unpadded baseline of the batch-32 wall clock: whole batches of the length-sorted split
    (the padding of sorting it all), and the padded figure from the same examples in random
    batches; batch 1 times some of the same examples."""
    lengths = sst2_lengths
    batches = timing_batches(lengths, 256, 32)
    assert len(batches) == 8 and all(len(b) == 32 for b in batches)
    order = np.argsort(lengths, kind="stable")
    assert all(list(order[order.tolist().index(b[0]):][:32]) == b for b in batches)
    assert timing_batches(lengths, 256, 32, seed=1) != batches
    sets = timing_sets(batches, 32, b1_examples=64)
    examples = sorted(i for b in batches for i in b)
    assert sorted(i for b in sets["random_b32"] for i in b) == examples
    assert sets["b32"] == batches and len(sets["b1"]) == 64
    assert {i for (i,) in sets["b1"]} <= set(examples)
    real = int(lengths[examples].sum())
    assert padded_tokens(lengths, sets["b32"]) < 1.05 * real
    assert padded_tokens(lengths, sets["random_b32"]) > 1.5 * real
