"""Transkimmer jobs: the key and the checkpoint name hold every setting that changes a result,
dependencies are explicit, and a job stopped (KeyboardInterrupt, SIGKILL) and resumed ends with
the metrics and weights of one run straight through (real SST-2 rows, MiniLM cut to 2 layers)."""
import dataclasses
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from effx.errors import ParameterError
from effx.transkimmer.jobs import (EVAL_FIELDS, LOGITS_TIMED, METHODS, TRAIN_FIELDS, Job,
                                  order_jobs)

#: a valid value different from the default, for every setting
CHANGED = dict(task="CoLA", encoder="bert-base-uncased", seed=1, subset=100, max_length=64,
               batch_size=16, bucketed=False, lr=3e-5, weight_decay=0.0, warmup=0.1, epochs=2.0,
               freeze_word_embeddings=False, device="cuda", skim_epochs=3.0, skim_lr=3e-5,
               init="pretrained", predictor_lr=1e-3, skim_lambda=1.0, variant="paper", tau=0.5,
               keep_bias=3.0, distill=0.5, distill_temperature=2.0, frozen_epochs=0.5, layers=2,
               layer_choice="spread",
               flops_target=0.3, prune_layers=(2, 4), dev_subset=50, timing_examples=64,
               timing_repeats=5, counted_flops_examples=4)


def test_every_setting_is_covered():
    names = {f.name for f in dataclasses.fields(Job)} - {"method"}
    assert names == set(CHANGED)
    used = set(EVAL_FIELDS).union(*TRAIN_FIELDS.values())
    assert used == names, "a setting no method's key holds"


@pytest.mark.parametrize("method", METHODS)
def test_key_and_checkpoint_change_with_every_setting(method):
    job = Job("SST-2", method)
    for name in TRAIN_FIELDS[method] + EVAL_FIELDS:
        other = dataclasses.replace(job, **{name: CHANGED[name]})
        assert other.key() != job.key(), name
        assert other.key()[name] != job.key()[name]
        if name in TRAIN_FIELDS[method]:
            assert other.checkpoint_name() != job.checkpoint_name(), name
        else:                                    # evaluation settings never retrain
            assert other.checkpoint_name() == job.checkpoint_name(), name
    for name in set(CHANGED) - set(TRAIN_FIELDS[method]) - set(EVAL_FIELDS):
        with pytest.raises(ParameterError, match=name):     # never silently ignored
            dataclasses.replace(job, **{name: CHANGED[name]})
    assert Job.from_key(job.key()) == job
    assert Job("sst2", method).key() == job.key()        # task names are canonical


def test_dependencies_are_explicit():
    tk = Job("SST-2", "transkimmer", skim_lambda=1.0, predictor_lr=1e-3, epochs=2.0)
    base = tk.requires()[0]
    assert base.method == "baseline" and base.epochs == 2.0 and base.key()["lr"] == tk.lr
    assert base == Job("SST-2", "baseline", epochs=2.0)
    same = tk.with_method("baseline_continued")
    assert same.requires() == (base,) and same.skim_epochs == tk.skim_epochs
    assert Job("SST-2", "topk_pruning", epochs=2.0).requires() == (base,)
    assert Job("SST-2", "transkimmer", init="pretrained").requires() == ()
    assert Job("SST-2", "transkimmer", init="pretrained", distill=0.5).requires()[0].method == "baseline"
    assert Job("SST-2", "fewer_layers").requires() == ()
    order = order_jobs([tk, same, base])
    assert order == [base, tk, same]
    with pytest.raises(ParameterError, match="method"):
        Job("SST-2", "distilbert")
    with pytest.raises(ParameterError, match="frozen_epochs"):
        Job("SST-2", "transkimmer", frozen_epochs=2.0)


# -- running: tiny but real -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm2(tmp_path_factory):
    from effx.transkimmer.encoders import save_cut_encoder
    return save_cut_encoder("minilm", 2, tmp_path_factory.mktemp("enc") / "minilm2")


def tiny(encoder, method, **kw):
    return Job("SST-2", method, encoder=encoder, subset=48, max_length=32, batch_size=8,
               epochs=1.0, dev_subset=24, timing_examples=8, timing_repeats=1,
               counted_flops_examples=1, **kw)


def _tk(encoder):
    return tiny(encoder, "transkimmer", skim_epochs=1.0, predictor_lr=1e-2, skim_lambda=2.0,
                distill=0.5)


def _quiet(m):
    pass


def _deterministic(metrics):
    return {k: v["value"] for k, v in metrics.items()
            if not k.startswith(("time_", "speedup_", "padding_", "train_s"))}


@pytest.fixture(scope="module")
def straight(minilm2, tmp_path_factory):
    """Transkimmer (and the baseline it requires) run straight through."""
    from effx.transkimmer.execute import run_job
    folder = tmp_path_factory.mktemp("straight")
    metrics, info = run_job(_tk(minilm2), folder, log=_quiet)
    return folder, metrics, info


def _weights(folder, job):
    return torch.load(folder / job.checkpoint_name() / "final.pt", weights_only=False)["model"]


def _same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_interrupted_job_resumes_to_the_same_result(minilm2, straight, tmp_path):
    from effx.transkimmer.execute import run_job
    job, calls = _tk(minilm2), []

    def stop_at(n):
        def hook(step):
            calls.append(step)
            if len(calls) == n:
                raise KeyboardInterrupt
        return hook
    # 6 steps per stage: stop inside the baseline's stage, then inside Transkimmer's
    with pytest.raises(KeyboardInterrupt):
        run_job(job, tmp_path, log=_quiet, checkpoint_every_s=0, on_step=stop_at(3))
    assert (tmp_path / job.requires()[0].checkpoint_name() / "progress.pt").exists()
    with pytest.raises(KeyboardInterrupt):
        run_job(job, tmp_path, log=_quiet, checkpoint_every_s=0, on_step=stop_at(3 + 3 + 4))
    assert calls[3:6] == [4, 5, 6] and calls[6:] == [1, 2, 3, 4]
    metrics, info = run_job(job, tmp_path, log=_quiet)
    assert info["curves"]["resumed_at"] == [4]
    folder, ref_metrics, ref_info = straight
    assert _deterministic(metrics) == _deterministic(ref_metrics)
    assert info["curves"]["loss"] == ref_info["curves"]["loss"]
    for j in (job, job.requires()[0]):
        _same_weights(_weights(tmp_path, j), _weights(folder, j))
    assert not (tmp_path / job.checkpoint_name() / "progress.pt").exists()


def test_killed_process_resumes_to_the_same_weights(minilm2, straight, tmp_path):
    """SIGKILL at an arbitrary point of training (here after the 3rd step's checkpoint)."""
    from effx.transkimmer.execute import run_job
    base = _tk(minilm2).requires()[0]
    child = textwrap.dedent(f"""
        import torch; torch.set_num_threads(1)
        from effx.transkimmer.execute import run_job
        from effx.transkimmer.jobs import Job
        job = Job.from_key({base.key()!r})
        def hook(step):
            print("STEP", step, flush=True)
            if step == 3:
                import time; time.sleep(600)
        run_job(job, {str(tmp_path)!r}, log=lambda m: None, checkpoint_every_s=0, on_step=hook)
    """)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:
            if line.strip() == "STEP 3":
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert (tmp_path / base.checkpoint_name() / "progress.pt").exists()
    metrics, info = run_job(base, tmp_path, log=_quiet)
    assert info["curves"]["resumed_at"] == [3]
    _same_weights(_weights(tmp_path, base), _weights(straight[0], base))


def test_every_method_runs_and_reports_what_it_measured(minilm2, straight):
    from effx.transkimmer.execute import run_job
    folder, metrics, info = straight
    assert {"accuracy", "keep_l0", "keep_l1", "flops_reference", "flops_method", "speedup_b1",
            "speedup_b32", "speedup_random_b32", "counted_flops_method"} <= set(metrics)
    assert info["lambda_official_equivalent"] == pytest.approx(2.0 / info["official_fill_ratio"])
    assert len(info["trace"]["skimmed_at"]) == len(info["trace"]["tokens"])
    correct = info["dev_correct"]                       # per dev example, for paired comparisons
    assert len(correct) == info["dev_examples"] and set(correct) <= {"0", "1"}
    assert correct.count("1") / len(correct) == pytest.approx(metrics["accuracy"]["value"])
    base_metrics, _ = run_job(tiny(minilm2, "baseline"), folder, log=_quiet)   # trained: loaded
    assert {"time_pad32_b32", "padding_pad32_b32", "padding_random_b32", "flops_pad512",
            "flops_random_b32"} <= set(base_metrics)
    assert "speedup_b32" not in base_metrics
    topk, topk_info = run_job(tiny(minilm2, "topk_pruning", flops_target=0.7), folder, log=_quiet)
    assert topk["keep_l0"]["value"] == 1.0 > topk["keep_l1"]["value"]
    assert topk_info["topk_train_flops_fraction"] == pytest.approx(0.7, abs=0.05)
    fewer, _ = run_job(tiny(minilm2, "fewer_layers", layers=1), folder, log=_quiet)
    assert fewer["flops_method"]["value"] < 0.6 * fewer["flops_reference"]["value"]
    assert "keep_l0" not in fewer


def test_the_wall_clock_unit_says_how_closely_its_weights_match_the_recorded_run(minilm2, straight):
    from effx.studies import get_study
    from effx.study import Context, Unit
    study, (folder, _, info), job = get_study("transkimmer_glue"), straight, _tk(minilm2)
    unit = Unit({**job.key(), "measure": "wall_clock"}, "wall clock")

    def gap(earlier):
        (record,) = study.execute(unit, {"threads": 1}, Context(earlier, _quiet, str(folder)))
        assert record.metrics["speedup_b32"]["value"] > 0
        assert record.info["timed_forward"] == LOGITS_TIMED         # records before: states
        return record.info["loss_curve_gap"]
    assert gap([{"info": {"seconds": 1.0}}, {"info": info}]) == 0.0    # the checkpoint of the record
    shifted = {"curves": {**info["curves"], "loss": [v + 0.01 for v in info["curves"]["loss"]]}}
    assert gap([{"info": shifted}]) == pytest.approx(0.01)            # weights of another run
    assert gap([]) is None                                            # nothing recorded to compare


def test_the_removal_paths_unit_times_both_paths_against_the_plain_encoder(minilm2, straight):
    """Only when asked, only for Transkimmer jobs; its speedups are the paired ratios of its times."""
    from effx.studies import get_study
    from effx.study import Context, Unit
    study, (folder, _, _), job = get_study("transkimmer_glue"), straight, _tk(minilm2)
    P = study.validate({"profile": "tiny", "references": ["baseline_continued"]})
    assert not [u for u in study.units(P) if u.key.get("measure") == "removal_paths"]
    every = [u.key for u in study.units({**P, "removal_paths": True})]
    asked = [k for k in every if k.get("measure") == "removal_paths"]
    assert asked and {k["method"] for k in asked} == {"transkimmer"}
    assert every[-len(asked):] == asked                              # after every other unit
    unit = Unit({**job.key(), "measure": "removal_paths"}, "removal paths")
    (record,) = study.execute(unit, {"threads": 1}, Context([], _quiet, str(folder)))
    m = record.metrics
    for path in ("states", "logits"):
        for b in ("b1", "b32"):
            ratios = [r / t for r, t in zip(m[f"paths_reference_{b}"]["samples"],
                                            m[f"paths_{path}_{b}"]["samples"])]
            assert m[f"paths_speedup_{path}_{b}"]["samples"] == pytest.approx(ratios)
            assert len(ratios) == job.timing_repeats
    assert record.info["paths_examples"] == 24                  # the tiny dev subset, all timed


def test_the_equal_budget_reference_can_be_trained_in_a_run_of_its_own():
    from effx.studies import get_study
    study = get_study("transkimmer_glue")
    P = study.validate({"profile": "tiny", "lambdas": {"CoLA": [0.3]},     # none for SST-2
                        "references": ["baseline_continued"], "wall_clock": False})
    assert [u.key["method"] for u in study.units(P)] == ["baseline", "baseline_continued"]


def test_records_made_before_the_layer_choice_read_as_the_first_layers():
    old_key = {k: v for k, v in Job("SST-2", "fewer_layers", layers=2).key().items()
               if k != "layer_choice"}
    assert Job.from_key(old_key).layer_choice == "first"
    from effx.studies import get_study
    study = get_study("transkimmer_glue")
    P = study.validate({"profile": "tiny", "references": ["fewer_layers"], "wall_clock": False})
    cut = [u.key for u in study.units(P) if u.key["method"] == "fewer_layers"]
    assert {k["layer_choice"] for k in cut} == {"spread"} and len(cut) == len(P["fewer_layers"])


def test_the_lambda_grid_runs_at_seed_0_and_only_the_repeated_lambdas_at_other_seeds():
    from effx.errors import ParameterError
    from effx.studies import get_study
    study = get_study("transkimmer_glue")
    base = {"profile": "tiny", "tasks": ["SST-2", "MRPC"], "seeds": [0, 1], "references": [],
            "wall_clock": False, "lambdas": {"SST-2": [0.1, 0.3, 0.5], "MRPC": [0.3]}}

    def planned(**extra):
        return sorted((u.key["task"], u.key["seed"], u.key["skim_lambda"]) for u in
                      study.units(study.validate({**base, **extra}))
                      if u.key["method"] == "transkimmer")
    every = planned()
    assert len(every) == 8                                     # None: every lambda at every seed
    assert planned(repeat_lambdas={"SST-2": [0.3, 0.5]}) == sorted(
        [("SST-2", 0, 0.1), ("SST-2", 0, 0.3), ("SST-2", 0, 0.5), ("SST-2", 1, 0.3),
         ("SST-2", 1, 0.5), ("MRPC", 0, 0.3), ("MRPC", 1, 0.3)])     # MRPC not named: all
    one_seed = study.validate({**base, "seeds": [1], "repeat_lambdas": {"SST-2": [0.5]}})
    assert {u.key["skim_lambda"] for u in study.units(one_seed)
            if u.key["method"] == "transkimmer" and u.key["task"] == "SST-2"} == {0.5}
    with pytest.raises(ParameterError, match=r"not in them: \[0\.8\]"):
        study.validate({**base, "repeat_lambdas": {"SST-2": [0.8]}})


def test_unit_costs_follow_the_training_each_job_does_itself():
    """The progress ETA weighs units by cost: a stage-2 job costs its own epochs only, a cut
    encoder its share of the layers, top-k pruning (no training) far less, a larger task more."""
    from effx.studies import get_study
    study = get_study("transkimmer_glue")
    P = study.validate({"profile": "tiny", "tasks": ["SST-2", "RTE"], "subset": 0, "epochs": 3.0,
                        "skim_epochs": 2.0, "fewer_layers": [2],
                        "references": ["baseline_continued", "fewer_layers", "topk_pruning"]})
    cost = {(u.key["task"], u.key["method"], u.key.get("measure")): u.cost_s for u in study.units(P)}
    base = cost["SST-2", "baseline", None]
    assert cost["SST-2", "transkimmer", None] == pytest.approx(base * 2 / 3)
    assert cost["SST-2", "baseline_continued", None] == pytest.approx(base * 2 / 3)
    assert cost["SST-2", "fewer_layers", None] == pytest.approx(base * 2 / 6)   # MiniLM: 6 layers
    assert cost["SST-2", "topk_pruning", None] < base / 20
    assert cost["RTE", "baseline", None] < base / 10                 # 2.5k against 67k examples
    assert 0 < cost["SST-2", "transkimmer", "wall_clock"] < base


def test_every_lambda_is_trained_with_each_distillation_weight_and_frozen_phase():
    from effx.errors import ParameterError
    from effx.studies import get_study
    study = get_study("transkimmer_glue")
    base = {"profile": "tiny", "references": [], "wall_clock": False, "lambdas": [0.3, 0.8],
            "skim_epochs": 2.0}
    P = study.validate({**base, "distills": [0.0, 0.5], "frozen_epochs": [0.0, 0.5]})
    planned = sorted((u.key["skim_lambda"], u.key["distill"], u.key["frozen_epochs"])
                     for u in study.units(P) if u.key["method"] == "transkimmer")
    assert planned == [(lam, kd, fr) for lam in (0.3, 0.8) for kd in (0.0, 0.5) for fr in (0.0, 0.5)]
    plain = study.validate({**base, "distills": [0], "frozen_epochs": [0]})   # ints, as typed
    keys = [u.key for u in study.units(plain) if u.key["method"] == "transkimmer"]
    assert all(type(k["distill"]) is float and type(k["frozen_epochs"]) is float for k in keys)
    assert {u.id for u in study.units(plain)} == {u.id for u in study.units(study.validate(base))}
    with pytest.raises(ParameterError, match="frozen_epochs.*shorter than SST-2's skim_epochs"):
        study.validate({**base, "frozen_epochs": [2.0]})
    with pytest.raises(ParameterError, match="distills"):
        study.validate({**base, "distills": [1.5]})


def test_a_hub_name_resolves_from_the_hub_cache_offline(minilm2, tmp_path):
    """``encoder`` may name a hub checkpoint: offline it is found in the hub cache (here a cache
    holding the cut MiniLM under a hub name, laid out as huggingface_hub writes it); a name the
    cache lacks fails with the parameter named."""
    import shutil
    repo = tmp_path / "hub" / "models--effx-test--minilm2"
    commit = "0" * 40
    shutil.copytree(minilm2, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    code = textwrap.dedent("""
        from effx.errors import ParameterError
        from effx.transkimmer.encoders import encoder_depth, load_encoder
        bert, tok = load_encoder("effx-test/minilm2")
        print(len(bert.encoder.layer), encoder_depth("effx-test/minilm2"), tok("a film")["input_ids"])
        try:
            load_encoder("effx-test/absent")
        except ParameterError as exc:
            print("refused:", str(exc).split(":")[0])
    """)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("2 2 [101, "), lines         # the cut MiniLM: 2 layers
    assert lines[1].startswith("refused: parameter 'encoder' = 'effx-test/absent'"), lines
