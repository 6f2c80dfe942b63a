"""The attention spec: what effx knows about one attention variant, declared beside its function.

Each variant module ends with one ``AttentionSpec`` record; ``effx.attention.ATTENTION`` maps
names to them. Everything else (the encoder, the studies, the FLOP tests, the book) reads the
facts from the record instead of keeping its own copy:

- ``options``            the options the variant takes, with their defaults (``REQUIRED``: none)
- ``call_options(t)``    the keyword arguments of ``fn`` at length T (e.g. the band layout that
                         block-sparse attention builds from T when no layout is given)
- ``keys_per_query(t)``  the mean number of keys a query really attends to (edges included)
- ``flops(B, H, T, D)``  the forward FLOPs FlopCounterMode counts for the call, 4*B*H*T*K*D with
                         K = keys_per_query unless the variant says otherwise (Nystrom's landmark
                         products and pseudo-inverse; block-sparse's padded gather)
- ``backward_flops``     ``backward_factor`` x forward: 2 when autograd differentiates the two
                         products (eager, block-sparse, Nystrom), 2.5 for fused kernels that
                         recompute the scores (SDPA, sliding window: FlashAttention's convention)
- ``computed_flops``     what one *path* (e.g. the CPU fallback, the Triton kernel) really
                         multiplies, tiles and padding included; >= ``flops``. Reported apart
                         from the counted FLOPs, never mixed into them.
- ``mask(t)``            the dense (T, T) bool pattern, or None for approximations (``exact=False``)

Shapes everywhere: q, k, v (B, H, T, D); FLOPs: 2 per multiply-add, softmax not counted.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

import torch


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: default of an option the caller must give (e.g. the sliding window's ``window``)
REQUIRED = _Required()


def attention_flops(batch: int, heads: int, t: int, head_dim: int,
                    keys_per_query: float | None = None) -> float:
    """Forward FLOPs of softmax attention, the convention of the whole project: 4*B*H*T*K*D,
    K = keys each query attends to (T if dense): two products, Q K^T and P V, 2 FLOPs per
    multiply-add."""
    keys = t if keys_per_query is None else keys_per_query
    return 4.0 * batch * heads * t * keys * head_dim


def _dense_mask(t: int, o: dict) -> torch.Tensor:
    return torch.ones(t, t, dtype=torch.bool)


def _format(value) -> str:
    if torch.is_tensor(value):                       # e.g. a learned layout: its shape and a digest
        data = value.detach().to("cpu").contiguous()
        digest = hashlib.sha1(data.numpy().tobytes()).hexdigest()[:10]
        return f"{'x'.join(map(str, data.shape))}:{digest}"
    return str(value)


@dataclass(frozen=True, eq=False)
class AttentionSpec:
    """One attention variant: its function and the facts about it (see the module docstring).

    The hooks take the length ``t`` and the *resolved* options ``o`` (defaults filled in):
    ``build(t, o) -> kwargs of fn``, ``keys(t, o) -> float``,
    ``count(batch, heads, t, head_dim, o) -> forward FLOPs``, ``pattern(t, o) -> bool mask``,
    ``computed(batch, heads, t, head_dim, o, path) -> FLOPs of one path``. A hook left None
    means: options passed as they are / T keys (dense) / ``attention_flops`` with
    ``keys_per_query`` / an all-True mask / the counted FLOPs.
    """

    name: str
    fn: Callable[..., torch.Tensor]
    options: Mapping[str, Any] = field(default_factory=dict)
    #: options that choose *how* it runs, not *what* it computes (left out of ``label``)
    runtime: tuple[str, ...] = ()
    #: True: softmax attention restricted to ``mask`` (tested equal to the dense reference)
    exact: bool = True
    backward_factor: float = 2.0
    summary: str = ""
    build: Callable[[int, dict], dict] | None = None
    keys: Callable[[int, dict], float] | None = None
    count: Callable[[int, int, int, int, dict], float] | None = None
    pattern: Callable[[int, dict], torch.Tensor] | None = None
    computed: Callable[[int, int, int, int, dict, str | None], float] | None = None
    #: names ``computed_flops`` accepts as ``path`` (None: the variant has one path)
    paths: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    # -- options ----------------------------------------------------------------------------
    def resolve(self, **options) -> dict:
        """The options with defaults filled in; unknown or missing options raise ValueError."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(f"attention {self.name!r} takes no option {unknown[0]!r}; "
                             f"its options: {', '.join(self.options) or 'none'}")
        resolved = {**self.options, **options}
        missing = [k for k, v in resolved.items() if v is REQUIRED]
        if missing:
            raise ValueError(f"attention {self.name!r} needs the option {missing[0]!r}")
        return resolved

    def call_options(self, t: int, **options) -> dict:
        """Keyword arguments of ``fn`` for inputs of length ``t`` (besides key_padding_mask, scale)."""
        o = self.resolve(**options)
        return self.build(t, o) if self.build else o

    def label(self, **options) -> str:
        """The options that define what is computed, e.g. ``window=256``: part of a result's key."""
        o = self.resolve(**options)
        return ",".join(f"{k}={_format(v)}" for k, v in o.items()
                        if k not in self.runtime and v is not None)

    # -- pattern and work -------------------------------------------------------------------
    def keys_per_query(self, t: int, **options) -> float:
        """Mean number of keys a query attends to at length ``t`` (padding ignored)."""
        o = self.resolve(**options)
        return float(self.keys(t, o)) if self.keys else float(t)

    def flops(self, batch: int, heads: int, t: int, head_dim: int, **options) -> float:
        """Forward FLOPs of the core, as FlopCounterMode counts them (effx.profiling.flops)."""
        o = self.resolve(**options)
        if self.count:
            return float(self.count(batch, heads, t, head_dim, o))
        return attention_flops(batch, heads, t, head_dim, self.keys_per_query(t, **options))

    def backward_flops(self, batch: int, heads: int, t: int, head_dim: int, **options) -> float:
        """Backward FLOPs as counted: ``backward_factor`` x the forward."""
        return self.backward_factor * self.flops(batch, heads, t, head_dim, **options)

    def computed_flops(self, batch: int, heads: int, t: int, head_dim: int, *,
                       path: str | None = None, **options) -> float:
        """Forward FLOPs one path really multiplies (tiles, chunks, padding): >= ``flops``."""
        if path is not None and path not in self.paths:
            raise ValueError(f"attention {self.name!r} has no path {path!r}; "
                             f"its paths: {', '.join(self.paths) or 'one (path=None)'}")
        o = self.resolve(**options)
        if self.computed:
            return float(self.computed(batch, heads, t, head_dim, o, path))
        return self.flops(batch, heads, t, head_dim, **options)

    def mask(self, t: int, **options) -> torch.Tensor | None:
        """The (T, T) bool pattern, True = query may attend to key ((H, T, T) for per-head
        layouts); None for approximate variants (``exact=False``)."""
        o = self.resolve(**options)
        if not self.exact:
            return None
        return (self.pattern or _dense_mask)(t, o)

    # -- the function -----------------------------------------------------------------------
    def __call__(self, q, k, v, **kwargs) -> torch.Tensor:
        """Call the plain function (``self.fn``) with ``kwargs`` as they are."""
        return self.fn(q, k, v, **kwargs)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"AttentionSpec({self.name!r}, {self.fn.__name__}({opts}), exact={self.exact})"
