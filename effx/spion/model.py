"""The small Long Range Arena classifier that SPION (Yoon, Han, Moon, arXiv 2309.12578) trains.

Dimension 64, 2 heads (head size 32), feed-forward 128; 4 layers for ListOps, 2 otherwise. Built
on effx's own encoder (``effx.models.encoder``: token embedding + sinusoidal positions +
pre-LayerNorm blocks, attention as a parameter), then mean pooling over the real tokens (the key
padding mask) and an MLP head 64 -> 128 -> classes (ReLU), as in the Nystromformer LRA code most
LRA reimplementations share. No dropout (effx's encoder has none), so training is deterministic.

Each layer's attention can be swapped at run time (``set_layer_attention``): dense SDPA during
SPION's warm-up, block-sparse with that layer's own layout after the switch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from effx.errors import ParameterError
from effx.models.encoder import Encoder, EncoderConfig
from effx.spion.pattern import AttentionMapMean

DENSE = "sdpa"
SOFTMAX_MODES = ("faithful", "standard")


@dataclass
class LraModelConfig:
    vocab_size: int
    num_classes: int
    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 2
    d_ff: int = 128
    head_hidden: int = 128


class LraClassifier(nn.Module):
    """Token ids (B, T) + key padding mask (B, T) -> class logits (B, classes)."""

    def __init__(self, cfg: LraModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(EncoderConfig(d_model=cfg.d_model, n_heads=cfg.n_heads,
                                             n_layers=cfg.n_layers, d_ff=cfg.d_ff,
                                             vocab_size=cfg.vocab_size, attention=DENSE))
        self.head = nn.Sequential(nn.Linear(cfg.d_model, cfg.head_hidden), nn.ReLU(),
                                  nn.Linear(cfg.head_hidden, cfg.num_classes))

    @property
    def blocks(self) -> nn.ModuleList:
        return self.encoder.blocks

    def attention_cores(self) -> list[nn.Module]:
        """The attention core of every layer, in order (hooks and set_attention go here)."""
        return [block.attn.core for block in self.encoder.blocks]

    def forward(self, input_ids: torch.Tensor, key_padding_mask: torch.Tensor | None = None):
        h = self.encoder(input_ids, key_padding_mask)                     # (B, T, d)
        if key_padding_mask is None:
            pooled = h.mean(dim=1)
        else:
            w = key_padding_mask.to(h.dtype)[..., None]                   # (B, T, 1)
            pooled = (h * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)     # mean over real tokens
        return self.head(pooled)                                          # (B, classes)


def set_layer_attention(model: LraClassifier, layouts: list[torch.Tensor | None], *, block: int,
                        softmax: str = "faithful", backend: str = "auto") -> None:
    """Per layer: None -> dense SDPA; a bool (nb, nb) layout -> block-sparse with that layout
    (``effx.attention.block_sparse``; backend 'auto' picks the Triton kernel on CUDA)."""
    cores = model.attention_cores()
    if len(layouts) != len(cores):
        raise ParameterError("layouts", f"{len(layouts)} layouts", f"one per layer ({len(cores)})")
    if softmax not in SOFTMAX_MODES:
        raise ParameterError("softmax", softmax, ", ".join(SOFTMAX_MODES))
    for core, layout in zip(cores, layouts):
        if layout is None:
            core.set_attention(DENSE)
        else:
            core.set_attention("block_sparse", layout=layout.bool(), block=block, softmax=softmax,
                               backend=backend)


def layer_attention(model: LraClassifier) -> list[tuple[str, torch.Tensor | None]]:
    """What each layer runs now: (attention name, layout or None)."""
    return [(core.name, core.options.get("layout")) for core in model.attention_cores()]


def attention_probabilities(q: torch.Tensor, k: torch.Tensor,
                            key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Dense softmax(q k^T / sqrt(D)) of one layer, (B, H, T, T); padded keys get 0, and the rows
    of padded queries are zeroed so that they add nothing to the averaged map."""
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])          # (B, H, T, T)
    if key_padding_mask is not None:
        scores = scores.masked_fill(~key_padding_mask[:, None, None, :], float("-inf"))
    probs = torch.softmax(scores.float(), dim=-1).nan_to_num(0.0)
    if key_padding_mask is not None:
        probs = probs * key_padding_mask[:, None, :, None]
    return probs


class MapCapture:
    """Forward hooks on every attention core that average softmax(q k^T / sqrt(D)) over batch and
    heads (recomputed from the core's q, k inputs, so any attention variant can be observed).

    Use for one forward pass: ``cap = MapCapture(model); model(...); maps = cap.maps()`` gives one
    (N, N) float64 map per layer and removes the hooks. The probabilities are built for
    ``chunk`` batch items at a time, (chunk, H, T, T): one item is the fastest on a CPU (2-4x
    faster than the whole batch at T = 1024, the tensors stay in cache) and bounds the memory.
    """

    def __init__(self, model: LraClassifier, chunk: int = 1):
        self.chunk = max(1, int(chunk))
        self.means = [AttentionMapMean() for _ in model.attention_cores()]
        self.handles = [core.register_forward_hook(self._hook(i), with_kwargs=True)
                        for i, core in enumerate(model.attention_cores())]

    def _hook(self, layer: int):
        def hook(module, args, kwargs, output):
            q, k = args[0].detach(), args[1].detach()                    # (B, H, T, D)
            mask = args[3] if len(args) > 3 else kwargs.get("key_padding_mask")
            c = self.chunk
            with torch.no_grad():
                for s in range(0, q.shape[0], c):
                    m = None if mask is None else mask[s:s + c]
                    self.means[layer].update(attention_probabilities(q[s:s + c], k[s:s + c], m))
        return hook

    def maps(self) -> list[torch.Tensor]:
        for handle in self.handles:
            handle.remove()
        return [m.mean for m in self.means]


def evaluate(model: LraClassifier, data, batch_size: int, device) -> float:
    """Accuracy of `model` on a TokenDataset."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for s in range(0, len(data), batch_size):
            ids, mask, labels = data.batch(range(s, min(s + batch_size, len(data))), device)
            correct += int((model(ids, mask).argmax(-1) == labels).sum())
    model.train()
    return correct / len(data)


def attention_flops(layouts: list[torch.Tensor | None], *, length: int, block: int,
                    n_heads: int, head_dim: int) -> dict:
    """Forward FLOPs of the attention cores for one sequence, 4 * H * D * (computed pairs):
    dense layers count T^2 query-key pairs, block-sparse layers block^2 per listed block (every
    listed tile is computed whole). Training costs about 3.5x (backward = 2.5x forward)."""
    per_layer = []
    for layout in layouts:
        pairs = length * length if layout is None else int(layout.sum()) * block * block
        per_layer.append(4.0 * n_heads * head_dim * pairs)
    dense = 4.0 * n_heads * head_dim * length * length * len(layouts)
    return {"per_layer": per_layer, "total": float(sum(per_layer)), "dense_total": dense,
            "fraction_of_dense": float(sum(per_layer)) / dense}
