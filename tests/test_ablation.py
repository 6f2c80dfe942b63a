"""Attention-core ablation: the no-op really replaces the attention, only inside the block, only
for the model asked, and models that cannot be ablated say why."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported

import pytest
import torch

from effx.errors import Unsupported
from effx.models import zoo
from effx.models.ablation import (SUPPORTED, UNSUPPORTED, _hf_attention_interface, Ablation,
                                  attention_core_ablated)
from effx.models.components import assign
from effx.models.encoder import Encoder, EncoderConfig
from effx.profiling.components import OwnedFlopCounter, by_component
from effx.profiling.module_tracer import ModuleTracer
from effx.profiling.op_profile import profiled_step
from effx.profiling.point import _first_tensor, make_step

LENGTHS = {"text": 64, "speech": 0.4, "vision": 224}
ABLATABLE = [("bert", "sdpa"), ("bert", "eager"), ("vit", "sdpa"), ("vit", "eager"),
             ("hubert", "sdpa"), ("hubert", "eager"), ("lhubert", "sdpa")]
NOT_ABLATABLE = ["longformer", "bigbird", "nystromformer", "swin", "pvt_v2"]




def tiny(name, impl="sdpa"):
    torch.manual_seed(0)
    entry = zoo.get_entry(name)
    model = entry.build(size="tiny", attn_implementation=impl)
    inputs = entry.make_inputs(model, batch=2, length=LENGTHS[entry.modality], device="cpu",
                               dtype=torch.float32)
    return model, inputs


def encoder(attention="sdpa", **kw):
    torch.manual_seed(0)
    cfg = dict(d_model=60, n_heads=4, n_layers=2, d_ff=124, vocab_size=97, attention=attention)
    model = Encoder(EncoderConfig(**{**cfg, **kw})).eval()
    return model, {"input_ids": torch.randint(0, 97, (2, 63), generator=torch.Generator().manual_seed(0))}


def builds():
    for attention, options in (("sdpa", {}), ("eager", {}), ("sliding_window", {"window": 8})):
        yield f"effx-{attention}", lambda a=attention, o=options: encoder(a, attention_options=o)
    for name, impl in ABLATABLE:
        yield f"{name}-{impl}", lambda n=name, i=impl: tiny(n, i)


def core_flops(model, inputs, mode="inference"):
    """FLOPs counted in the attention-core component of one step."""
    tracer = ModuleTracer(model)
    counter = OwnedFlopCounter(tracer.current)
    step = make_step(lambda: model(**inputs), mode, model)
    with tracer, counter:
        step()
    return by_component(dict(counter.by_owner), assign(model)).get("attention_core", 0)


@pytest.mark.parametrize("label,build", list(builds()), ids=[b[0] for b in builds()])
def test_the_no_op_replaces_every_attention_core_and_is_undone_on_exit(label, build):
    model, inputs = build()
    layers = 2
    with torch.no_grad():
        before = _first_tensor(model(**inputs))
        with attention_core_ablated(model) as ablation:
            inside = _first_tensor(model(**inputs))
            assert ablation.calls == layers                  # one no-op call per layer
            effx_core = [n for n, m in model.named_modules() if type(m).__name__ == "AttentionCore"]
            assert ablation.replaced == tuple(effx_core)     # whole modules: effx's cores only
        after = _first_tensor(model(**inputs))
    assert inside.shape == before.shape and inside.dtype == before.dtype
    assert not torch.allclose(inside, before, atol=1e-4)     # attention really gone
    assert torch.equal(after, before)                        # and back
    assert core_flops(model, inputs) > 0
    with attention_core_ablated(model):                      # no attention matmuls left
        assert core_flops(model, inputs) == 0


@pytest.mark.parametrize("label,build", [b for b in builds() if b[0] in ("effx-sdpa", "bert-sdpa",
                                                                          "hubert-sdpa")],
                         ids=["effx-sdpa", "bert-sdpa", "hubert-sdpa"])
def test_ablated_training_keeps_the_projections_backward(label, build):
    model, inputs = build()
    step = make_step(lambda: model(**inputs), "training", model)
    a = assign(model)
    grads = {}

    def keep(name):
        def hook(p):
            grads[name] = p.detach().clone()
        return hook
    handles = [p.register_hook(keep(n)) for n, p in model.named_parameters()]
    with attention_core_ablated(model):
        _, ops = profiled_step(step, model)
    for h in handles:
        h.remove()
    qkv = {n for n, _ in model.named_parameters() if a[n.rsplit(".", 1)[0]] == "qkv_projection"}
    assert qkv and qkv <= set(grads), "every Q/K/V weight still gets its gradient (zeros for Q, K)"
    core_ops = {op for (module, phase), per in ops.by_operator.items()
                if module is not None and a[module] == "attention_core" for op in per}
    assert not {op for op in core_ops if "attention" in op or "softmax" in op or "mm" in op}, core_ops


@pytest.mark.parametrize("name", NOT_ABLATABLE)
def test_models_that_cannot_be_ablated_say_why(name):
    model, _ = tiny(name)
    with pytest.raises(Unsupported, match="ablation not available"):
        with attention_core_ablated(model):
            pass
    with pytest.raises(Unsupported, match="no AttentionCore|ablation not available"):
        with attention_core_ablated(torch.nn.Linear(2, 2)):
            pass


@pytest.mark.parametrize("name", ["longformer", "bigbird", "nystromformer", "pvt_v2", "swin"])
def test_which_zoo_models_honour_the_attention_interface(name):
    """The reasons in UNSUPPORTED are facts about transformers: models said to compute attention
    inline never call the interface (if one starts to, this fails: add it to SUPPORTED)."""
    model, inputs = tiny(name)
    handle = Ablation("probe")
    with torch.no_grad(), _hf_attention_interface(model, handle):
        model(**inputs)
    key = (type(model).__module__, type(model).__name__)
    assert key in UNSUPPORTED and key not in SUPPORTED
    assert (handle.calls > 0) == (name == "swin")


def test_other_models_in_the_process_are_untouched():
    (a, inputs), (b, _) = tiny("bert"), tiny("bert")
    with torch.no_grad():
        before = _first_tensor(b(**inputs))
        with attention_core_ablated(a) as ablation:
            during = _first_tensor(b(**inputs))
    assert ablation.calls == 0 and torch.equal(during, before)
