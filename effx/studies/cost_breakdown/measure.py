"""One point of the cost breakdown: one model, mode and length, profiled per component."""
from __future__ import annotations

import statistics

from effx.errors import Unsupported
from effx.models import builders
from effx.models.ablation import attention_core_ablated
from effx.models.components import COMPONENTS, assign, family_of
from effx.models.encoder import EncoderConfig, encoder_flops
from effx.profiling.components import UNATTRIBUTED, count_components, profile_components
from effx.profiling.paired import warm_up
from effx.profiling.point import make_step
from effx.results import metric
from effx.runner.local import is_oom
from effx.study import Record


def measure_point(unit, P: dict, ctx) -> list[Record]:
    k = unit.key
    try:
        model = builders.build(k["modality"], k["model"], k["size"], k["device"], k["dtype"],
                               P["controlled_layers"], P["lhubert_window"])
        kwargs, info = builders.inputs(k["modality"], k["model"], model, k["batch"], k["length"],
                                       k["device"], k["dtype"])
    except Unsupported as exc:
        return [Record(k, "unsupported", info={"reason": str(exc)})]
    if k["mode"] == "training":
        model.train(False)                                  # dropout off: cost, not regularisation
    forward = lambda: model(**kwargs)                       # noqa: E731
    info = {n: v for n, v in info.items() if isinstance(v, (int, float, str, bool))}
    info["family"] = family_of(model)
    try:
        one, _ = warm_up(make_step(forward, k["mode"], model), device=k["device"])
        if one > P["budget_s"]:
            counted = count_components(model, forward, assign, mode=k["mode"])
            info.update(stopped_by_budget_s=P["budget_s"],
                        timing=f"one step took {one:.2f} s > budget {P['budget_s']:g} s")
            return [Record(k, "ok", _counted_metrics(counted), info)]
        ctx.log(f"profiling {unit.label}: {P['repeats']} rounds")
        r = profile_components(model, forward, assign, mode=k["mode"], device=k["device"],
                               repeats=P["repeats"], ablation=attention_core_ablated)
    except Exception as exc:  # noqa: BLE001 - an out-of-memory point is a result
        if not is_oom(exc):
            raise
        return [Record(k, "oom", info={"error": str(exc).splitlines()[0][:300]})]
    m = _counted_metrics(r)
    m["latency_s"] = metric(r["plain"]["median"], "s", r["plain_s"])
    m["profiled_s"] = metric(statistics.median(r["profiled_s"]), "s", r["profiled_s"])
    m["operator_s"] = metric(statistics.median(r["operator_s"]), "s", r["operator_s"])
    m["time_s/overhead"] = metric(r["overhead"]["median"], "s", r["overhead_s"])
    for c in list(COMPONENTS) + [UNATTRIBUTED]:
        samples = r["time_s"].get(c, [0.0] * P["repeats"])
        m[f"time_s/{c}"] = metric(statistics.median(samples), "s", samples)
        if k["mode"] == "training":
            back = r["backward_s"].get(c, [0.0] * P["repeats"])
            m[f"backward_s/{c}"] = metric(statistics.median(back), "s", back)
    ab = r["ablation"]
    info["ablation"] = ab["status"] if ab["status"] == "ok" else f"unavailable: {ab['reason']}"
    if ab["status"] == "ok":
        m["ablation_s"] = metric(ab["median_s"], "s", ab["diff_s"])
        m["ablation_share"] = metric(ab["share"], "fraction")
        m["profiled_core_share"] = metric(ab["profiled_share"], "fraction")
        for part, samples in ab["parts_s"].items():        # what the removal saved, by part
            m[f"ablation_parts/{part}"] = metric(statistics.median(samples), "s", samples)
            info[f"ablation_parts_interval/{part}"] = list(ab["parts_interval_s"][part])
        info["ablation_share_interval"] = list(ab["share_interval"])
    for name, c in r["check"].items():
        if name == "passed":
            continue
        m[f"check/{name}"] = metric(c["value"], "fraction")
        info[f"check/{name}"] = {"interval": list(c.get("interval", ())), "passed": c["passed"],
                                 "verdict": c["verdict"], "tolerance": c["tolerance"]}
    info.update(check_passed=r["check"]["passed"], module_calls=r["module_calls"],
                profiler_events=r["profiler_events"])
    if k["mode"] == "inference":
        for c, v in (analytic_flops(k, model, info) or {}).items():
            m[f"analytic_flops/{c}"] = metric(v, "FLOP")
    return [Record(k, "ok", m, info)]


def _counted_metrics(r: dict) -> dict:
    m = {"flops": metric(r["flops_total"], "FLOP"),
         "saved_bytes": metric(sum(r["saved_bytes"].values()), "bytes")}
    for c in COMPONENTS:
        m[f"flops/{c}"] = metric(r["flops"].get(c, 0), "FLOP")
        m[f"saved_bytes/{c}"] = metric(r["saved_bytes"].get(c, 0), "bytes")
    return m


def analytic_flops(point: dict, model, info: dict) -> dict[str, float] | None:
    """Forward FLOPs per component from the model's sizes (2 per multiply-add), for the dense
    models with a closed form (effx dense encoder, BERT, ViT, HuBERT); None otherwise. Counts what
    FlopCounterMode counts: matmuls, convolutions, attention (not norms, softmax, activations)."""
    b, name = point["batch"], point["model"].split(":")[0]
    if point["modality"] == "controlled":           # every core as its spec counts it
        return dict(model.flops(b, info["sequence_length"]), input=0, other=0)
    if point["modality"] == "controlled_vision":
        t, c = info["sequence_length"], model.cfg
        patch = 2 * b * t * c.d_model * 3 * model.patch ** 2
        return dict(model.flops(b, t), input=patch, other=0)
    c = getattr(model, "config", None)
    if name in ("bert", "vit"):
        cfg = EncoderConfig(d_model=c.hidden_size, n_heads=c.num_attention_heads,
                            n_layers=c.num_hidden_layers, d_ff=c.intermediate_size)
        t, d = info["sequence_length"], c.hidden_size
        patch = 2 * b * (t - 1) * d * c.num_channels * c.patch_size ** 2 if name == "vit" else 0
        return dict(encoder_flops(cfg, b, t), input=patch, other=2 * b * d * d)   # pooler: [CLS]
    if name == "hubert":
        layers = model.encoder.transformer.layers
        attn = layers[0].attention
        d, t = attn.embed_dim, info["sequence_length"]
        cfg = EncoderConfig(d_model=d, n_heads=attn.num_heads, n_layers=len(layers),
                            d_ff=layers[0].feed_forward.intermediate_dense.out_features)
        n, cnn = info["samples"], 0
        for block in model.feature_extractor.conv_layers:
            conv = block.conv
            n = (n - conv.kernel_size[0]) // conv.stride[0] + 1
            cnn += 2 * b * n * conv.out_channels * conv.in_channels * conv.kernel_size[0]
        proj = model.encoder.feature_projection.projection
        pos = model.encoder.transformer.pos_conv_embed.conv
        out_len = t + 2 * pos.padding[0] - pos.kernel_size[0] + 1
        pos_flops = 2 * b * out_len * pos.out_channels * (pos.in_channels // pos.groups) * pos.kernel_size[0]
        return dict(encoder_flops(cfg, b, t), input=cnn + 2 * b * t * proj.in_features * d + pos_flops,
                    other=0)
    return None
