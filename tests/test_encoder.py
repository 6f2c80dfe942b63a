"""effx's encoder: attention is the only thing that changes between variants."""
import pytest
import torch

from effx.errors import ParameterError
from effx.models.encoder import Encoder, EncoderConfig, encoder_flops
from effx.profiling import count_flops


def tiny(attention="sdpa", **opts):
    torch.manual_seed(0)
    return Encoder(EncoderConfig(d_model=32, n_heads=4, n_layers=2, d_ff=64, vocab_size=50,
                                 attention=attention, attention_options=opts)).eval()


def test_variants_share_everything_but_attention():
    ids = torch.randint(0, 50, (2, 45))
    dense = tiny("sdpa")
    out = dense(ids)
    for name, opts in [("eager", {}), ("sliding_window", {"window": 100}), ("block_sparse", {"block": 64})]:
        other = tiny(name, **opts)
        other.load_state_dict(dense.state_dict())
        torch.testing.assert_close(other(ids), out, atol=1e-5, rtol=1e-5)   # window/blocks cover T


def test_small_window_changes_the_output():
    ids = torch.randint(0, 50, (1, 45))
    dense, local = tiny("sdpa"), tiny("sliding_window", window=2)
    local.load_state_dict(dense.state_dict())
    assert not torch.allclose(dense(ids), local(ids), atol=1e-3)


def test_analytic_flops_equal_counted_flops():
    model = tiny("sdpa")
    ids = torch.randint(0, 50, (2, 30))
    counted, _ = count_flops(lambda: model(ids))
    analytic = sum(encoder_flops(model.cfg, 2, 30).values())
    assert counted == analytic


def test_unknown_attention_is_a_clear_error():
    with pytest.raises(ParameterError, match="'attention'.*sliding_window"):
        EncoderConfig(attention="performer")


@pytest.mark.parametrize("attention, opts", [("eager", {}), ("sliding_window", {"window": 4}),
                                             ("block_sparse", {"block": 8, "band": 1}),
                                             ("nystrom", {"num_landmarks": 5})], ids=lambda x: str(x))
def test_analytic_flops_equal_counted_flops_for_every_variant(attention, opts):
    model = tiny(attention, **opts)
    ids = torch.randint(0, 50, (2, 37))
    counted, per_op = count_flops(lambda: model(ids))
    assert counted == pytest.approx(sum(encoder_flops(model.cfg, 2, 37).values()), rel=1e-12), per_op


def test_one_layer_can_switch_its_attention():
    """SPION gives each layer its own layout: set_attention swaps one layer's core only, and the
    model's FLOPs follow each layer's core."""
    ids = torch.randint(0, 50, (1, 45))
    dense = tiny("sdpa")
    out = dense(ids)
    core = dense.blocks[1].attn.core
    layout = torch.eye(6, dtype=torch.bool)                      # each block of 8 sees itself only
    assert core.set_attention("block_sparse", layout=layout, block=8) is core
    assert dense.blocks[0].attn.core.name == "sdpa" and core.name == "block_sparse"
    assert not torch.allclose(dense(ids), out, atol=1e-3)
    counted, _ = count_flops(lambda: dense(ids))
    assert counted == pytest.approx(sum(dense.flops(1, 45).values()), rel=1e-12)
    assert dense.flops(1, 45) != encoder_flops(dense.cfg, 1, 45)  # the config no longer tells
    core.set_attention("sdpa")
    torch.testing.assert_close(dense(ids), out)


def test_bad_attention_options_are_clear_errors():
    with pytest.raises(ParameterError, match="attention_options.*needs the option 'window'"):
        EncoderConfig(attention="sliding_window")
    with pytest.raises(ParameterError, match="no option 'windw'"):
        tiny().blocks[0].attn.core.set_attention("sliding_window", windw=3)
