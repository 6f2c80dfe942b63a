"""Parameter validation: defaults filled in, one clear message naming the parameter and what is
allowed, for every study of the registry."""
import pytest

from effx import params as p
from effx.errors import ParameterError
from effx.pipeline import profile_values
from effx.studies import get_study

STUDY = get_study("attention_scaling")


@pytest.mark.parametrize("name, value, needle", [
    ("lengths", [0, 128], "positive integers"),
    ("lengths", [128.5], "positive integers"),
    ("lengths", [], "non-empty list"),
    ("lengths", "128", "non-empty list"),
    ("variants", ["sdpa", "performer"], "'sliding_window'"),
    ("modes", ["backward"], "'inference'"),
    ("dtype", "int8", "'float32'"),
    ("repeats", 0, "an integer >= 1"),
    ("repeats", True, "an integer >= 1"),
    ("budget_s", -1, "positive number"),
])
def test_bad_values_name_the_parameter(name, value, needle):
    with pytest.raises(ParameterError) as err:
        STUDY.validate({name: value})
    message = str(err.value)
    assert f"'{name}'" in message and needle in message


def test_defaults_fill_in_what_is_not_given():
    P = STUDY.validate({})
    assert P["lengths"] == STUDY.parameters["lengths"].default and P["profile"] == "quick"
    P["lengths"].append(1)                                   # callers may mutate: a deep copy
    assert STUDY.validate({})["lengths"] != P["lengths"]


def test_cuda_without_gpu_is_a_clear_error():
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ParameterError, match=r"'device'.*no CUDA GPU is available.*allowed: 'cpu'"):
        STUDY.validate({"device": "cuda"})


def test_unknown_study_and_unknown_or_required_parameter():
    with pytest.raises(ParameterError, match="'study'.*attention_scaling"):
        get_study("no_such_study")
    with pytest.raises(ParameterError, match="'colour'.*has no such parameter"):
        STUDY.validate({"colour": "red"})
    schema = {"n": p.positive_int("a count")}
    with pytest.raises(ParameterError, match="'n'.*required"):
        p.validate(schema, {})


def test_a_notebook_namespace_gives_only_the_schema_names():
    namespace = {"__name__": "__main__", "lengths": [64], "display": print, "runner": "process"}
    assert STUDY.validate(namespace)["lengths"] == [64]


def test_lengths_are_sorted_and_deduplicated():
    assert STUDY.validate({"lengths": [512, 128, 512]})["lengths"] == [128, 512]


def test_unknown_profile_names_the_profiles():
    with pytest.raises(ParameterError, match="'profile'.*quick"):
        profile_values(STUDY, "huge")


def test_a_model_of_another_modality_is_refused_with_the_models_of_that_modality():
    tp = get_study("tipping_points")
    with pytest.raises(ParameterError) as err:
        tp.validate({"models": {"text": ["hubert"]}, "modalities": ["text"]})
    message = str(err.value)
    assert "models['text']" in message and "bert" in message and "lhubert" not in message.split("allowed:")[1]


def test_a_missing_glue_folder_says_where_it_looked(monkeypatch, tmp_path):
    missing = tmp_path / "no-glue-here"
    monkeypatch.setenv("EFFX_GLUE_DIR", str(missing))
    with pytest.raises(ParameterError) as err:
        get_study("transkimmer_glue").validate({})
    assert "'tasks'" in str(err.value) and str(missing) in str(err.value)


def test_a_missing_dataset_names_where_it_looked_and_how_to_install_it(monkeypatch, tmp_path):
    from effx.data.images import fashion_mnist_arrays
    from effx.errors import MissingData
    monkeypatch.setenv("EFFX_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(MissingData) as err:
        fashion_mnist_arrays("train")
    assert str(tmp_path) in str(err.value) and "apt-get install dataset-fashion-mnist" in str(err.value)


def test_non_default_compares_with_the_checked_defaults():
    from effx.studies import get_study
    study = get_study("transkimmer_glue")
    ran = {**study.defaults(), "fewer_layers": [2, 3], "lambdas": [0.5]}   # as a run records them
    assert p.non_default(study.schema, ran) == {"lambdas": [0.5]}
    renamed = {**ran, "distill": 0.5}              # recorded before 'distill' became 'distills'
    assert p.non_default(study.schema, renamed) == {"lambdas": [0.5], "distill": 0.5}
    from effx.report import parameter_table
    table = parameter_table(study, p.non_default(study.schema, renamed))
    assert table.loc["distill", "default"] == "no longer a parameter"
