"""Parameter validation: one clear message naming the parameter and what is allowed."""
import pytest

from effx.errors import ParameterError
from effx.params import validate
from effx.pipeline import profile_params


def quick_params(study="attention_scaling"):
    return dict(profile_params(study, "quick"), profile="quick")


def test_profiles_validate():
    for profile in ("tiny", "quick"):
        validate("attention_scaling", dict(profile_params("attention_scaling", profile), profile=profile))


@pytest.mark.parametrize("name, value, needle", [
    ("lengths", [0, 128], "positive integers"),
    ("lengths", [128.5], "positive integers"),
    ("lengths", [], "non-empty list"),
    ("lengths", "128", "non-empty list"),
    ("variants", ["sdpa", "performer"], "'sliding_window'"),
    ("modes", ["backward"], "'inference'"),
    ("dtype", "int8", "'float32'"),
    ("repeats", 0, "positive integer"),
    ("repeats", True, "positive integer"),
    ("budget_s", -1, "positive number"),
])
def test_bad_values_name_the_parameter(name, value, needle):
    params = dict(quick_params(), **{name: value})
    with pytest.raises(ParameterError) as err:
        validate("attention_scaling", params)
    message = str(err.value)
    assert f"'{name}'" in message and needle in message


def test_cuda_without_gpu_is_a_clear_error():
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ParameterError, match=r"'device'.*no CUDA GPU is available.*allowed: 'cpu'"):
        validate("attention_scaling", dict(quick_params(), device="cuda"))


def test_unknown_study_and_unknown_or_missing_parameter():
    with pytest.raises(ParameterError, match="'study'.*attention_scaling"):
        validate("no_such_study", {})
    with pytest.raises(ParameterError, match="'colour'.*has no such parameter"):
        validate("attention_scaling", dict(quick_params(), colour="red"))
    params = quick_params()
    del params["lengths"]
    with pytest.raises(ParameterError, match="'lengths'.*missing"):
        validate("attention_scaling", params)


def test_lengths_are_sorted_and_deduplicated():
    assert validate("attention_scaling", dict(quick_params(), lengths=[512, 128, 512]))["lengths"] == [128, 512]


def test_unknown_profile_names_the_profiles():
    with pytest.raises(ParameterError, match="'profile'.*quick"):
        profile_params("attention_scaling", "huge")
