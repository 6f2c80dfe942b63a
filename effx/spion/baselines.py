"""Fixed block layouts that SPION is compared with, built for a target density.

Both are block layouts (bool (nb, nb), shared by heads and layers) run by the same block-sparse
attention as SPION's learned layouts, so that time and FLOPs differ only through the blocks
listed. Density = listed blocks / nb^2 (``layout_density``). To compare at equal cost, pass the
density of SPION's learned layouts (their mean over layers, from a finished SPION run).

- ``sliding_window_layout``: the block band |r - c| <= w (Longformer-style local attention at
  block granularity), w chosen so that the density is the closest to the target.
- ``bigbird_layout``: BigBird's ITC pattern (Zaheer et al., 2020) at block granularity: a band of
  ``window`` blocks each side, ``n_global`` global blocks (first block rows and columns: they see
  and are seen by everything), then random blocks in each row (same count per row, seeded, not
  already listed) until the density reaches the target. When window + global already exceed the
  target, no random block is added and the density is that floor.
"""
from __future__ import annotations

import torch

from effx.attention.block_sparse import band_layout, layout_density
from effx.errors import ParameterError

def _check_density(density: float) -> float:
    if not 0.0 < density <= 1.0:
        raise ParameterError("density", density, "a fraction of blocks in (0, 1]")
    return float(density)


def sliding_window_layout(nb: int, density: float) -> torch.Tensor:
    """Block band of the half-width w in [0, nb-1] whose density is the closest to `density`."""
    density = _check_density(density)
    best = min(range(nb), key=lambda w: (abs(layout_density(band_layout(nb, w)) - density), w))
    return band_layout(nb, best)


def bigbird_layout(nb: int, density: float, *, window: int = 1, n_global: int = 1,
                   seed: int = 0) -> torch.Tensor:
    """Band (`window` blocks each side) + `n_global` global blocks + random blocks to `density`."""
    density = _check_density(density)
    layout = band_layout(nb, window)
    g = min(n_global, nb)
    layout[:g, :] = True
    layout[:, :g] = True
    missing = round(density * nb * nb) - int(layout.sum())
    per_row = max(0, round(missing / max(1, nb - g)))       # random blocks in each non-global row
    gen = torch.Generator().manual_seed(seed)
    for r in range(g, nb):
        free = torch.nonzero(~layout[r]).flatten()
        if per_row and len(free):
            pick = free[torch.randperm(len(free), generator=gen)[:per_row]]
            layout[r, pick] = True
    return layout


#: name -> (nb, density, seed) -> bool (nb, nb)
FIXED_PATTERNS = {
    "sliding_window": lambda nb, density, seed: sliding_window_layout(nb, density),
    "bigbird": lambda nb, density, seed: bigbird_layout(nb, density, seed=seed),
}


def fixed_layout(pattern: str, nb: int, density: float, seed: int = 0) -> torch.Tensor:
    """The layout of a fixed baseline by name ('sliding_window' or 'bigbird')."""
    if pattern not in FIXED_PATTERNS:
        raise ParameterError("pattern", pattern, ", ".join(FIXED_PATTERNS))
    return FIXED_PATTERNS[pattern](nb, density, seed)


def matched_density(spion_record: dict) -> float:
    """The density to give a fixed baseline to compare with a finished SPION run at equal
    attention cost: the mean over layers of SPION's learned layout densities."""
    if spion_record.get("switched_at") is None:
        raise ParameterError("spion_record", spion_record.get("key"), "a SPION run that switched "
                             "to sparse attention")
    return float(spion_record["mean_density"])
