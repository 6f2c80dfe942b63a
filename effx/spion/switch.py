"""When SPION switches a layer-wise training run from dense to sparse attention.

Yoon, Han, Moon, SPION (arXiv 2309.12578): training starts dense. Every K steps (500; 200 for
long text tasks) each layer's attention probabilities, averaged over batch and heads into one
(N, N) map, are handed over. With d_t the Frobenius distance between a layer's consecutive maps,
the run switches once |d_t - d_(t-1)| / d_(t-1) < threshold (15 %) in every layer; the pattern is
then built once (``effx.spion.pattern.spion_layout``) from the latest maps and kept.
A fixed-step rule (switch at a given step) is offered as the simple alternative.

The state is a small dataclass of floats and (N, N) tensors: picklable, and ``state_dict`` /
``load_state_dict`` fit a ``torch.save`` checkpoint, so a resumed run decides exactly as an
uninterrupted one.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from effx.errors import ParameterError

__all__ = ["DenseToSparseSwitch", "relative_change"]


def relative_change(previous: float, current: float) -> float:
    """|d_t - d_(t-1)| / d_(t-1); 0/0 = 0 (a map that stopped moving), x/0 = inf for x > 0."""
    diff = abs(current - previous)
    if previous == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return diff / previous


@dataclass
class DenseToSparseSwitch:
    """Decides when to switch from dense to sparse attention, from per-layer attention maps.

    num_layers: layers observed; threshold: the relative change of d_t below which a layer is
    settled (0.15); every: the K of "every K steps" (``due(step)`` says when to observe);
    switch_step: when set, the fixed-step rule: ready once an observation at step >= switch_step
    arrives, whatever the distances. ``ready`` latches: once true it stays true.
    """
    num_layers: int
    threshold: float = 0.15
    every: int = 500
    switch_step: int | None = None
    steps: list[int] = field(default_factory=list)                 # steps of the observations
    distances: list[list[float]] = field(default_factory=list)     # per layer: d_1, d_2, ...
    latest_maps: list[torch.Tensor] = field(default_factory=list)  # per layer: (N, N) float64
    switched_at: int | None = None                                 # the step where ready became true

    def __post_init__(self):
        if self.num_layers < 1:
            raise ParameterError("num_layers", self.num_layers, "an integer >= 1")
        if not self.threshold > 0:
            raise ParameterError("threshold", self.threshold, "a number > 0 (0.15 in the paper)")
        if self.every < 1:
            raise ParameterError("every", self.every, "an integer >= 1")
        if not self.distances:
            self.distances = [[] for _ in range(self.num_layers)]

    def due(self, step: int) -> bool:
        """True at the steps where the training loop should hand over its maps (multiples of K)."""
        return step > 0 and step % self.every == 0

    @property
    def ready(self) -> bool:
        return self.switched_at is not None

    def layer_changes(self) -> list[float]:
        """Per layer: |d_t - d_(t-1)| / d_(t-1) for the latest two distances (inf until there are two)."""
        return [relative_change(d[-2], d[-1]) if len(d) >= 2 else float("inf") for d in self.distances]

    def observe(self, step: int, maps) -> bool:
        """Record one (N, N) map per layer observed at ``step``; returns ``ready``."""
        maps = [m.detach().double().cpu() for m in maps]
        if len(maps) != self.num_layers:
            raise ParameterError("maps", f"{len(maps)} maps", f"one per layer ({self.num_layers})")
        if self.steps and step <= self.steps[-1]:
            raise ParameterError("step", step, f"a step after the last observation ({self.steps[-1]})")
        if self.latest_maps:
            for layer, (old, new) in enumerate(zip(self.latest_maps, maps)):
                if old.shape != new.shape:
                    raise ParameterError("maps", f"layer {layer} map {tuple(new.shape)}",
                                         f"the shape seen before, {tuple(old.shape)}")
                self.distances[layer].append(torch.linalg.matrix_norm(new - old).item())  # Frobenius
        self.latest_maps = maps
        self.steps.append(step)
        if not self.ready and self._rule_met(step):
            self.switched_at = step
        return self.ready

    def _rule_met(self, step: int) -> bool:
        if self.switch_step is not None:
            return step >= self.switch_step
        return all(change < self.threshold for change in self.layer_changes())

    # -------------------------------------------------------------------------- checkpointing

    def state_dict(self) -> dict:
        """Plain values and tensors only (``torch.save(..., weights_only=True)`` can load it)."""
        return {"num_layers": self.num_layers, "threshold": self.threshold, "every": self.every,
                "switch_step": self.switch_step, "steps": list(self.steps),
                "distances": [list(d) for d in self.distances],
                "latest_maps": list(self.latest_maps), "switched_at": self.switched_at}

    @classmethod
    def from_state_dict(cls, state: dict) -> "DenseToSparseSwitch":
        return cls(**{**state, "steps": list(state["steps"]),
                      "distances": [list(d) for d in state["distances"]],
                      "latest_maps": list(state["latest_maps"])})
