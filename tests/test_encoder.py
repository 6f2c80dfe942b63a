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
