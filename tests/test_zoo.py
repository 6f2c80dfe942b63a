"""The reference-model zoo: every entry builds offline and runs; describe() tells what really ran."""
import os
import socket

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported

import pytest
import torch
import transformers as hf

from effx.errors import ParameterError
from effx.models import zoo, zoo_speech, zoo_text
from effx.errors import Unsupported

LENGTHS = {"text": (100, 800), "speech": (0.5, 1.0), "vision": (224, 256)}




def run(entry, model, length, batch=2, **kw):
    inputs = entry.make_inputs(model, batch, length, "cpu", torch.float32)
    with torch.no_grad():
        out = model(**inputs, **kw)
    return out, entry.describe(model, inputs), inputs


@pytest.fixture(scope="module")
def tiny():
    cache = {}

    def get(name, **kw):
        key = (name, tuple(sorted(kw.items())))
        if key not in cache:
            torch.manual_seed(0)
            cache[key] = zoo.get_entry(name).build(size="tiny", **kw)
        return cache[key]
    return get


@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_entry_builds_offline_and_runs_two_lengths(name, tiny, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError(f"{name} tried to open a network connection")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    entry = zoo.get_entry(name)
    model = tiny(name)
    assert not model.training
    for length in LENGTHS[entry.modality]:
        out, info, _ = run(entry, model, length)
        assert {"attention_path", "attn_implementation", "sequence_length",
                "padded_length"} <= set(info)
        assert info["padded_length"] >= info["sequence_length"] >= 1
        hidden = out[0] if isinstance(out, tuple) else out.last_hidden_state
        assert hidden.shape[0] == 2 and torch.isfinite(hidden).all()
        if entry.modality == "speech" or name == "vit":   # frames / tokens, nothing padded
            assert hidden.shape[1] == info["sequence_length"]


def test_registry_shape():
    for name, e in zoo.ZOO.items():
        assert e.name == name and e.modality in zoo.MODALITIES
        if e.baseline is not None:
            assert zoo.ZOO[e.baseline].modality == e.modality and zoo.ZOO[e.baseline].baseline is None
    assert zoo.models_for("text") == ["bert", "longformer", "bigbird", "nystromformer"]
    assert zoo.models_for("speech") == ["hubert", "lhubert"]
    assert zoo.models_for("vision") == ["vit", "swin", "pvt_v2"]


def test_unknown_model_names_parameter_and_lists_allowed():
    with pytest.raises(ParameterError) as err:
        zoo.get_entry("reformer")
    assert err.value.name == "model"
    for name in zoo.ZOO:
        assert name in str(err.value)
    with pytest.raises(ParameterError, match="size"):
        zoo.get_entry("bert").build(size="huge")
    with pytest.raises(ParameterError, match="attn_implementation"):
        zoo.get_entry("bert").build(size="tiny", attn_implementation="flash")
    with pytest.raises(ParameterError, match="modality"):
        zoo.models_for("video")


# ---------------------------------------------------------------- BigBird
def test_bigbird_switch_condition_matches_hf_source():
    cfg = hf.BigBirdConfig()                       # block 64, 3 random blocks
    assert zoo_text.bigbird_full_threshold(cfg) == (5 + 2 * 3) * 64 == 704
    assert zoo_text.bigbird_path(cfg, "block_sparse", 704) == "original_full"
    assert zoo_text.bigbird_path(cfg, "block_sparse", 705) == "block_sparse"


def test_hf_bigbird_switch_sticks_without_our_hook():
    """The trap itself, in raw HF: a short input switches to full, and it stays full."""
    cfg = hf.BigBirdConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=64)
    raw = hf.BigBirdModel(cfg).eval()
    with torch.no_grad():
        raw(input_ids=torch.randint(5, 100, (1, 704)))
        raw(input_ids=torch.randint(5, 100, (1, 768)))
    assert raw.attention_type == "original_full"            # stuck on the model...
    assert raw.config.attention_type == "block_sparse"      # ...not in the config


def test_bigbird_describe_full_vs_block_sparse_and_no_sticking(tiny):
    entry, model = zoo.get_entry("bigbird"), tiny("bigbird")

    def layer_kind():
        return type(model.encoder.layer[0].attention.self).__name__

    for length, path, kind in [(800, "block_sparse", "BigBirdBlockSparseAttention"),
                               (100, "original_full", "BigBirdSelfAttention"),
                               (800, "block_sparse", "BigBirdBlockSparseAttention")]:
        _, info, _ = run(entry, model, length, batch=1)
        assert info["attention_path"] == path
        assert model.attention_type == path and layer_kind() == kind   # what really ran
    _, info, _ = run(entry, model, 705, batch=1)
    assert info["padded_length"] == 768                       # block_sparse pads to block 64


# ---------------------------------------------------------------- Nystromformer
def test_nystromformer_runs_nystrom_branch(tiny):
    entry, model = zoo.get_entry("nystromformer"), tiny("nystromformer")
    m = model.config.num_landmarks
    out, info, _ = run(entry, model, 100, batch=1, output_attentions=True)
    assert info["attention_path"] == f"nystrom(landmarks={m})"
    assert (info["sequence_length"], info["padded_length"]) == (100, 128)
    assert out.attentions[0].shape[-2:] == (128, m)            # kernel_1 @ inv(kernel_2): T x m
    out, info, _ = run(entry, model, 64, batch=1, output_attentions=True)
    assert info["attention_path"] == "full" and out.attentions[0].shape[-2:] == (64, 64)


def test_nystromformer_half_precision_is_unsupported_not_a_crash():
    entry = zoo.get_entry("nystromformer")
    model = entry.build(size="tiny").to(torch.bfloat16)
    with pytest.raises(Unsupported, match="iterative_inv"), torch.no_grad():
        model(**entry.make_inputs(model, 1, 128, "cpu", None))


def test_nystromformer_published_config_runs_full_attention():
    """The trap: segment_means_seq_len = num_landmarks = 64 takes the full branch at any length."""
    cfg = hf.NystromformerConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=64)
    raw = hf.NystromformerModel(cfg).eval()
    with torch.no_grad():
        out = raw(input_ids=torch.randint(5, 100, (1, 128)), output_attentions=True)
    assert out.attentions[0].shape[-2:] == (128, 128)


# ---------------------------------------------------------------- Longformer
@pytest.mark.parametrize("length", [1, 100, 512, 513])
def test_longformer_padded_length_is_a_multiple_of_the_window(length, tiny):
    entry, model = zoo.get_entry("longformer"), tiny("longformer")
    inputs = entry.make_inputs(model, 1, length, "cpu", None)
    info = entry.describe(model, inputs)
    w = max(model.config.attention_window)           # HF stores one window per layer
    assert info["padded_length"] % w == 0 and info["padded_length"] >= length
    assert info["padded_length"] - length < w


# ---------------------------------------------------------------- attention implementations
@pytest.mark.parametrize("name", ["bert", "vit", "hubert"])
def test_sdpa_and_eager_compute_the_same_function(name):
    entry = zoo.get_entry(name)
    outs = []
    for impl in ("sdpa", "eager"):
        torch.manual_seed(0)
        model = entry.build(size="tiny", attn_implementation=impl)
        out, info, _ = run(entry, model, LENGTHS[entry.modality][0], batch=1)
        assert info["attn_implementation"] == impl
        outs.append(out[0] if isinstance(out, tuple) else out.last_hidden_state)
    torch.testing.assert_close(outs[0], outs[1], atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- vision
def test_vit_interpolates_positions_off_224(tiny):
    entry, model = zoo.get_entry("vit"), tiny("vit")
    assert entry.make_inputs(model, 1, 224, "cpu", None)["interpolate_pos_encoding"] is False
    assert entry.make_inputs(model, 1, 256, "cpu", None)["interpolate_pos_encoding"] is True
    with pytest.raises(Unsupported):
        entry.make_inputs(model, 1, 250, "cpu", None)


def test_swin_window_shift_do_not_stick_and_bad_sides_are_unsupported(tiny):
    entry, model = zoo.get_entry("swin"), tiny("swin")
    last = model.encoder.layers[-1].blocks[1]                 # a shifted-window block
    run(entry, model, 224, batch=1)                           # last stage 7 x 7: HF sets shift 0
    assert last.shift_size == 0
    _, info, _ = run(entry, model, 256, batch=1)              # last stage 8 x 8: shifted again
    assert last.shift_size == model.config.window_size // 2
    assert info["stages"][-1] == {"resolution": 8, "padded": 14, "window": 7, "shift": 3}
    assert info["padded_length"] == 70 ** 2                   # 64 x 64 padded to 70 x 70
    for side in (192, 250):
        with pytest.raises(Unsupported):
            entry.make_inputs(model, 1, side, "cpu", None)


def test_pvt_v2_side_must_divide(tiny):
    entry, model = zoo.get_entry("pvt_v2"), tiny("pvt_v2")
    with pytest.raises(Unsupported):
        entry.make_inputs(model, 1, 100, "cpu", None)
    assert entry.describe(model, entry.make_inputs(model, 1, 224, "cpu", None))["keys_per_query"] == 49


# ---------------------------------------------------------------- limits
def test_lengths_beyond_the_model_are_unsupported():
    bert = zoo.get_entry("bert")
    model = bert.build(size="tiny", max_position_embeddings=128)
    with pytest.raises(Unsupported):
        bert.make_inputs(model, 1, 129, "cpu", None)
    with pytest.raises(ValueError):
        bert.make_inputs(model, 1, 10.5, "cpu", None)
    hubert = zoo.get_entry("hubert")
    with pytest.raises(Unsupported):
        hubert.make_inputs(zoo_speech.build_hubert("tiny", "sdpa"), 1, 0.02, "cpu", None)


def test_hubert_base_config_is_torchaudio_hubert_base():
    """HUBERT_BASE spells out torchaudio.models.hubert_base(): same parameters, same shapes."""
    import torchaudio
    with torch.device("meta"):                                # shapes only: no memory, no init
        ours = zoo.get_entry("hubert").build(size="base")
        ref = torchaudio.models.hubert_base()
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in ref.state_dict().items()}
    assert ours.encoder.transformer.layer_drop == 0.0
